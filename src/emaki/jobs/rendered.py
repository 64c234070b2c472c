"""A generation as bytes: what a worker hands back so that the head stays the only writer.

A worker (an `EngineSlot`: in this process, or inside a Ray actor) runs a `JobRequest` on its own
`Engine` without saving, and returns a `JobOutcome`: each image as finished PNG bytes with its
infotext, plus the facts the head records (model, hash, worker, seconds). The head writes the
bytes where it wants them; a worker never writes an output file.

Nothing here imports Ray: the local batch runs the same `EngineSlot` in process.
"""

from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emaki.errors import EmakiError
from emaki.params import GenerationParams

if TYPE_CHECKING:
    from emaki.engine import Engine
    from emaki.engine.run import Cancel, GenerationResult, ProgressCallback
    from emaki.workspace import Workspace

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every complete PNG


@dataclass(frozen=True)
class JobRequest:
    """One generation to run: `key` names it (and its output files), `params` has its seeds resolved."""

    key: str
    params: GenerationParams

    @property
    def model(self) -> str:
        """The checkpoint it needs, as named (empty: the demo model): what model affinity routes by."""
        return self.params.model or ""


@dataclass(frozen=True)
class RenderedImage:
    png: bytes  # a complete PNG holding `infotext` in its `parameters` chunk
    infotext: str
    seed: int
    subseed: int
    width: int
    height: int


@dataclass(frozen=True)
class JobOutcome:
    """How one `JobRequest` ended: its images, or `error` (then `error_type` names its class)."""

    key: str
    images: list[RenderedImage] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # model, model_hash, vae, vae_hash, worker, seconds, cpu_seconds
    attempts: int = 1
    retried: str | None = None  # why an earlier attempt was dropped (its worker died)
    ran: dict[str, Any] | None = None  # the params as run (seeds resolved, size filled in), a dump

    @property
    def ok(self) -> bool:
        return self.error is None


def png_bytes(image: Any, infotext: str) -> bytes:
    """`image` (PIL) as the PNG `emaki.engine.output.save_png` writes: the infotext in `parameters`."""
    from emaki.engine.output import png_info

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(infotext))
    return buffer.getvalue()


def worker_name() -> str:
    """host:pid, how a summary names the process that made an image."""
    return f"{socket.gethostname()}:{os.getpid()}"


def rendered_images(result: GenerationResult) -> list[RenderedImage]:
    return [RenderedImage(png_bytes(i.image, i.infotext), i.infotext, i.seed, i.subseed, i.image.width,
                          i.image.height) for i in result.images]


def model_facts(result: GenerationResult | None) -> dict[str, Any]:
    """What the head records of the model that made `result` (nothing when there is none)."""
    if result is None:
        return {}
    model = result.model
    return {"model": model.name, "model_hash": model.hash, "vae": model.vae_name, "vae_hash": model.vae_hash}


class EngineSlot:
    """One worker slot: an `Engine` that runs requests one at a time and returns bytes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def on_workspace(cls, workspace: Workspace, threads: int | None = None,
                     precision: str | None = None, compile: bool = False) -> EngineSlot:
        """A slot on `workspace` (a Ray worker's own: models are found there by name; the demo
        model is bundled); `compile`: torch.compile its UNet (`--compile`)."""
        from emaki.devices import DevicePolicy
        from emaki.engine import Engine

        return cls(Engine(workspace, DevicePolicy.choose(precision, threads=threads, compile=compile)))

    def render(self, key: str, fields: dict[str, Any], *, progress: ProgressCallback | None = None,
               cancel: Cancel | None = None) -> JobOutcome:
        """Run the generation `fields` (a `GenerationParams` dump) without saving it. A user's
        error (a bad field, a refused prompt, a missing model) is the outcome's `error`; so is a
        bug, named as one: the head decides what to record, the worker only reports. An error
        after some batches were made (an interrupt through `cancel`) keeps their images."""
        started = time.perf_counter(), time.process_time()
        try:
            # Validated and judged here again: what reaches a worker is never taken on trust.
            params = GenerationParams.create(**fields)
            result = self.engine.generate(params, save=False, progress=progress, cancel=cancel)
        except EmakiError as e:
            made: GenerationResult | None = getattr(e, "result", None)
            return JobOutcome(key, images=rendered_images(made) if made is not None else [], error=str(e),
                              error_type=type(e).__name__, facts=self._facts(started) | model_facts(made),
                              ran=made.params.model_dump() if made is not None else None)
        except Exception as e:  # noqa: BLE001  (a bug must not take the worker down: the head records it)
            return JobOutcome(key, error=f"internal error: {type(e).__name__}: {e}", error_type=type(e).__name__,
                              facts=self._facts(started))
        return JobOutcome(key, images=rendered_images(result), facts=self._facts(started) | model_facts(result),
                          ran=result.params.model_dump())

    @staticmethod
    def _facts(started: tuple[float, float]) -> dict[str, Any]:
        """Who ran it, its wall time, and this process's CPU time over it (the slot runs one job at a time)."""
        return {"worker": worker_name(), "seconds": round(time.perf_counter() - started[0], 3),
                "cpu_seconds": round(time.process_time() - started[1], 3)}

    def ping(self) -> str:
        """The worker's name: answers once the slot is up (the Ray executor's liveness probe)."""
        return worker_name()

"""Where a queued job runs: the seam between the queue and the engine. `LocalExecutor` runs it
in this process on an `Engine`; a remote executor (a Ray cluster) implements the same calls,
returning a `RemoteResult` (images made elsewhere, written here) for a generation.

`slots` is how many jobs an executor runs at once (the worker runs that many); one engine runs
one job at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias

from emaki.engine.engine import Engine
from emaki.engine.run import Cancel, GeneratedImage, GenerationResult, ProgressCallback
from emaki.errors import EmakiError
from emaki.params import GenerationParams
from emaki.training.params import TrainingParams
from emaki.training.report import TrainingCallback, TrainingOutcome

if TYPE_CHECKING:
    from emaki.xyz.run import GridProgressCallback, GridResult
    from emaki.xyz.spec import GridSpec


@dataclass(frozen=True)
class RemoteModel:
    """What the queue records of the model a worker elsewhere used (`LoadedModel`'s names and hashes)."""

    name: str
    hash: str | None = None
    vae_name: str | None = None
    vae_hash: str | None = None


@dataclass
class RemoteResult:
    """A generation made by a worker elsewhere; its images are written here (`path`) when kept."""

    params: GenerationParams
    model: RemoteModel
    images: list[GeneratedImage] = field(default_factory=list)
    note: str | None = None  # what the job's record says of its run (retried after its worker died)


#: What a generation job returns: made here, or elsewhere.
Generated: TypeAlias = "GenerationResult | RemoteResult"


class RemoteFailure(EmakiError):
    """A job failed on a worker elsewhere: `error_type` names the error the worker met (the
    class the job records: `PolicyViolation`, `ModelLoadError`, `WorkerLost`, ...)."""

    def __init__(self, message: str, error_type: str, note: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.note = note


class Executor(Protocol):
    slots: int  # jobs it runs at once

    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> Generated:
        """Generate `params`; write the images to the workspace's outputs when `save`."""
        ...

    def grid(self, params: GenerationParams, spec: GridSpec, *, progress: GridProgressCallback | None,
             cancel: Cancel, save: bool) -> GridResult:
        """Run the X/Y/Z plot `spec` over `params`; on an interrupt, `Interrupted` carries the
        partial `GridResult` as its `result`."""
        ...

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None,
              cancel: threading.Event) -> TrainingOutcome:
        """Train an embedding or a hypernetwork; once `cancel` is set, save and return `cancelled`."""
        ...

    def resumable(self, params: TrainingParams) -> bool:
        """Whether an earlier run of `params` left something to go on from (`resume`)."""
        ...

    def close(self) -> None:
        """Let go of what it holds (a cluster's actors); called once the worker has stopped."""
        ...


class LocalExecutor:
    """Runs jobs on an engine in the calling thread (the worker's), one at a time."""

    slots = 1

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        pass

    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> GenerationResult:
        return self.engine.generate(params, progress=progress, cancel=cancel, save=save)

    def grid(self, params: GenerationParams, spec: GridSpec, *, progress: GridProgressCallback | None,
             cancel: Cancel, save: bool) -> GridResult:
        from emaki.xyz.run import run_grid  # the grid code loads with the first grid

        return run_grid(self.engine, params, spec, progress=progress, cancel=cancel, save=save)

    def sd_upscale(self, params: GenerationParams, *, upscaler: str, scale: float, overlap: int,
                   progress: ProgressCallback | None, cancel: Cancel, save: bool) -> GenerationResult:
        """A1111's "SD upscale" script on `params.init_image` (`emaki.engine.sd_upscale`); the
        progress counts its tiles as batches. Only this executor runs it (a job of this kind
        on another fails naming why)."""
        from emaki.engine.output import dated_folder
        from emaki.engine.sd_upscale import sd_upscale
        from emaki.upscalers.upscale import open_picture

        if not params.init_image:
            raise EmakiError("sd-upscale job: its params name no init_image")
        folder = dated_folder(self.engine.workspace.outputs) if save else None
        return sd_upscale(self.engine, params.updated(init_image=None), open_picture(params.init_image),
                          upscaler=upscaler, scale=scale, overlap=overlap, progress=progress, cancel=cancel,
                          out_dir=folder)

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None,
              cancel: threading.Event) -> TrainingOutcome:
        return self.engine.train(params, progress=progress, cancel=cancel)

    def resumable(self, params: TrainingParams) -> bool:
        """A saved training state, or the trained file (unless the run was to replace it)."""
        from emaki.training.checkpoint import STATE_FILE
        from emaki.training.trainer import log_directory, trained_file

        if (log_directory(self.engine, params) / "state" / STATE_FILE).is_file():
            return True
        return not params.overwrite and trained_file(self.engine, params).is_file()

"""The one worker thread: takes jobs from the store in order and runs them through the engine.

It keeps what `/progress` and the event stream report (step, batch, the latest latent) and,
for clients that asked not to save (A1111 `save_images: false`), holds the images in memory
until the waiting request takes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from emaki.devices import DevicePolicy
from emaki.errors import EmakiError, Interrupted
from emaki.generate import GeneratedImage, GenerationProgress, GenerationResult, batch_seeds, generate
from emaki.home import outputs_dir
from emaki.output import dated_folder, save_png
from emaki.params import GenerationParams
from emaki.server.preview import Previewer, png_base64, preview_image
from emaki.server.store import ImageRecord, Job, JobStore

log = logging.getLogger("emaki.server")
HELD_SECONDS = 15 * 60  # images nobody collected are dropped after this long


@dataclass(frozen=True)
class Progress:
    """A snapshot of the running job (all zero/None when idle)."""

    job_id: str | None = None
    started: float = 0.0
    batch: int = 0
    batches: int = 0
    step: int = 0
    steps: int = 0
    latent: np.ndarray | None = None  # numpy: readers run in request threads (see preview.py)
    preview_map: np.ndarray | None = None

    def preview_base64(self) -> str | None:
        """The latest latent as a base64 PNG (None before the first step)."""
        if self.latent is None or self.preview_map is None:
            return None
        return png_base64(preview_image(self.latent, self.preview_map))

    @property
    def fraction(self) -> float:
        if not self.job_id or not self.steps or not self.batches:
            return 0.0
        return min(1.0, (self.batch * self.steps + self.step) / (self.batches * self.steps))

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the time so far."""
        done = self.fraction
        elapsed = time.time() - self.started
        return elapsed / done - elapsed if done > 0 else 0.0


def result_summary(result: GenerationResult, job_timestamp: str) -> dict:
    """What the store keeps of a finished job (enough for A1111's `info`)."""
    params = result.params
    subseeds = [s for b in range(params.n_iter) for s in batch_seeds(params, b)[1]]
    return {
        "params": params.model_dump(),
        "seeds": [image.seed for image in result.images],
        "subseeds": subseeds[: len(result.images)],
        "infotexts": [image.infotext for image in result.images],
        "model_name": result.model.name,
        "model_hash": result.model.hash,
        "vae_name": result.model.vae_name,
        "vae_hash": result.model.vae_hash,
        "job_timestamp": job_timestamp,
    }


class Worker:
    """Runs queued jobs one at a time in a background thread."""

    def __init__(self, store: JobStore, *, policy: DevicePolicy | None = None,
                 generate_fn: Callable[..., GenerationResult] = generate) -> None:
        self.store = store
        self.policy = policy or DevicePolicy.choose()
        self.interrupt = threading.Event()
        self.skip = threading.Event()
        self.previewer = Previewer()
        self._generate = generate_fn
        self._lock = threading.Lock()
        self._progress = Progress()
        self._held: dict[str, tuple[float, list[GeneratedImage]]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle ---

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="emaki-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish (or interrupt) the current job, then stop taking new ones."""
        self._stopping.set()
        self.interrupt.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim_next(timeout=0.5)
            if job is not None:
                self.run_job(job)

    # --- what the API reads ---

    def progress(self) -> Progress:
        with self._lock:
            return self._progress

    def take_held(self, job_id: str) -> list[GeneratedImage] | None:
        with self._lock:
            held = self._held.pop(job_id, None)
        return held[1] if held is not None else None

    def interrupt_job(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (only if it is `job_id`, when given)."""
        with self._lock:
            running = self._progress.job_id
        if running is None or (job_id is not None and running != job_id):
            return False
        self.interrupt.set()
        return True

    # --- running ---

    def _on_progress(self, update: GenerationProgress) -> None:
        with self._lock:
            current = self._progress
        preview_map = current.preview_map
        if preview_map is None:
            preview_map = self.previewer.prepare(update.model.components)
        latest = replace(current, batch=update.batch, batches=update.batches, step=update.step, steps=update.steps,
                         latent=update.latent[0].detach().float().cpu().numpy().copy(), preview_map=preview_map)
        with self._lock:
            self._progress = latest

    def run_job(self, job: Job) -> None:
        self.interrupt.clear()
        self.skip.clear()
        started = time.time()
        with self._lock:
            self._progress = Progress(job_id=job.id, started=started)
        try:
            params = GenerationParams.create(**job.params)
            result = self._generate(params, save=False, progress=self._on_progress, interrupt=self.interrupt,
                                    skip=self.skip, policy=self.policy)
            self._record(job, result, time.strftime("%Y%m%d%H%M%S", time.localtime(started)))
        except Interrupted:
            self._finish(job.id, "interrupted", error="interrupted")
        except EmakiError as e:
            self._finish(job.id, "failed", error=str(e))
        except Exception as e:  # a bug must not kill the worker; the job records it
            log.exception("job %s failed", job.id)
            self._finish(job.id, "failed", error=f"internal error: {type(e).__name__}: {e}")

    def _finish(self, job_id: str, status: str, *, images: list[ImageRecord] = (), **fields: object) -> None:
        # Idle before the job ends: whoever its end wakes must not see it as still in progress.
        with self._lock:
            self._progress = Progress()
        self.store.finish(job_id, status, images=images, **fields)

    def _record(self, job: Job, result: GenerationResult, job_timestamp: str) -> None:
        records = []
        if job.keep:
            folder = dated_folder(outputs_dir())
            for image in result.images:
                try:
                    image.path = save_png(image.image, image.infotext, folder, image.seed)
                except OSError as e:
                    raise EmakiError(f"could not write the image to {folder}: {e}") from None
                records.append(ImageRecord(image.path, image.seed, result.params.prompt,
                                           result.params.negative_prompt, result.model.name,
                                           image.image.width, image.image.height, image.infotext))
        else:
            now = time.time()
            with self._lock:
                self._held = {k: v for k, v in self._held.items() if now - v[0] < HELD_SECONDS}
                self._held[job.id] = (now, result.images)
        self._finish(job.id, "done", result=result_summary(result, job_timestamp), images=records)

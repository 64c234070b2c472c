"""The one worker thread: takes jobs from the store in order and runs them on an `Executor`.

It keeps what `/progress` and the event stream report (step, batch, the latest latent) and,
for clients that asked not to save (A1111 `save_images: false`), holds the images in memory
until the waiting request takes them. The engine writes the images of kept jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from emaki.engine.preview import png_base64, preview_image
from emaki.engine.run import Cancel, GeneratedImage, GenerationProgress, GenerationResult
from emaki.errors import EmakiError, Interrupted
from emaki.jobs.executor import Executor
from emaki.jobs.store import ImageRecord, Job, JobStore
from emaki.params import GenerationParams

log = logging.getLogger("emaki.jobs")
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
    return {
        "params": result.params.model_dump(),
        "seeds": [image.seed for image in result.images],
        "subseeds": [image.subseed for image in result.images],
        "infotexts": [image.infotext for image in result.images],
        "model_name": result.model.name,
        "model_hash": result.model.hash,
        "vae_name": result.model.vae_name,
        "vae_hash": result.model.vae_hash,
        "job_timestamp": job_timestamp,
    }


class Worker:
    """Runs queued jobs one at a time in a background thread."""

    def __init__(self, store: JobStore, executor: Executor) -> None:
        self.store = store
        self.executor = executor
        self.cancel = Cancel()
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
        self.cancel.interrupt.set()
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
        self.cancel.interrupt.set()
        return True

    # --- running ---

    def _on_progress(self, update: GenerationProgress) -> None:
        with self._lock:
            current = self._progress
        latest = replace(current, batch=update.batch, batches=update.batches, step=update.step, steps=update.steps,
                         latent=update.latent[0].detach().float().cpu().numpy().copy(),
                         preview_map=update.preview_map)
        with self._lock:
            self._progress = latest

    def run_job(self, job: Job) -> None:
        self.cancel.interrupt.clear()
        self.cancel.skip.clear()
        started = time.time()
        with self._lock:
            self._progress = Progress(job_id=job.id, started=started)
        timestamp = time.strftime("%Y%m%d%H%M%S", time.localtime(started))
        try:
            params = GenerationParams.create(**job.params)
            result = self.executor.run(params, progress=self._on_progress, cancel=self.cancel, save=job.keep)
            self._record(job, result, timestamp)
        except EmakiError as e:
            # The batches finished before an interrupt or a failure are kept (the engine has
            # written them): they go into the gallery, and back to an A1111 client, as in A1111.
            status, error = ("interrupted", "interrupted") if isinstance(e, Interrupted) else ("failed", str(e))
            partial: GenerationResult | None = getattr(e, "result", None)
            if partial is not None and partial.images:
                self._record(job, partial, timestamp, status=status, error=error)
            else:
                self._finish(job.id, status, error=error)
        except Exception as e:  # a bug must not kill the worker; the job records it
            log.exception("job %s failed", job.id)
            self._finish(job.id, "failed", error=f"internal error: {type(e).__name__}: {e}")

    def _finish(self, job_id: str, status: str, *, images: Sequence[ImageRecord] = (),
                result: dict[str, Any] | None = None, error: str | None = None) -> None:
        # Idle before the job ends: whoever its end wakes must not see it as still in progress.
        with self._lock:
            self._progress = Progress()
        self.store.finish(job_id, status, images=images, result=result, error=error)

    def _record(self, job: Job, result: GenerationResult, job_timestamp: str, status: str = "done",
                error: str | None = None) -> None:
        records = []
        if job.keep:
            for image in result.images:
                assert image.path is not None  # the engine wrote it
                records.append(ImageRecord(image.path, image.seed, result.params.prompt,
                                           result.params.negative_prompt, result.model.name,
                                           image.image.width, image.image.height, image.infotext))
        else:
            now = time.time()
            with self._lock:
                self._held = {k: v for k, v in self._held.items() if now - v[0] < HELD_SECONDS}
                self._held[job.id] = (now, result.images)
        self._finish(job.id, status, result=result_summary(result, job_timestamp), images=records, error=error)

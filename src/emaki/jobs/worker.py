"""The worker: takes jobs from the store in order and runs them on an `Executor`, as many at
once as the executor has slots (one thread each: one for the local engine, one per actor of a
Ray cluster). Each running job has its own cancel flags and progress; `progress()` reports the
longest-running one (A1111's clients expect one job at a time).

It keeps what `/progress` and the event stream report (step, batch, the latest latent; for a
training job the loss series and the latest preview image) and, for clients that asked not to
save (A1111 `save_images: false`), holds the images in memory until the waiting request takes
them. The engine writes the images of kept jobs.

A grid job (an X/Y/Z plot) runs its cells one after another; its progress says which cell of
how many, and the step of that cell. Its gallery images are the grid first, then (when written)
the Z sub-grids, then every cell's images; interrupted, it keeps the finished cells and the
partial grid.

An SD upscale job (A1111's img2img script) redraws its tiles one after another; its progress
counts the tiles as batches, and interrupted, it keeps the picture with the tiles finished.

A merge or LoRA extraction job (`file_jobs.py`) runs on the workspace's files, here, whatever
the executor; its progress is bytes (layers) done of the total, and cancelled it writes nothing.

A training job runs to its end, or until it is cancelled (then it saves, and ends
`interrupted`). Stopped by a server stop, it goes back in the queue instead, and when it runs
again (after a stop or a crash) it goes on from its last save (`resume`).

A generation, grid or SD upscale job stopped by a server stop (not by its user's interrupt) goes
back in the queue too, and runs again from its start at the next start, if it saved nothing
yet. One that saved images (a finished batch, a cell, a partial picture) ends `interrupted` with
them and a note instead: a rerun cannot leave out what was made (seeds, wildcards and cells
follow from the whole job), so its images would be in the gallery twice. A client-only job
(A1111 `save_images: false`) ends `interrupted` as before: its waiting request is answered now,
and nobody would wait for it after a restart. A job a lane takes as the server stops is put
back without running (its claim not counted).

Nothing a job does can stop the thread. A job whose images cannot be written (a full disk) fails
with the reason; a job whose end the store cannot record is recorded as failed with why (a
smaller write), else held ended in memory by the store. Until a job is written again, `faults`
reports why (what `/api/health` shows).
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from PIL import Image

from emaki.engine.preview import png_base64, preview_image
from emaki.engine.run import Cancel, GeneratedImage, GenerationProgress
from emaki.errors import EmakiError, Interrupted
from emaki.infotext import parse_infotext
from emaki.jobs.executor import Executor, Generated, RemoteFailure
from emaki.jobs.faults import StorageError, disk_full
from emaki.jobs.file_jobs import FILE_JOB_KINDS, FileJobs
from emaki.jobs.store import ImageRecord, Job, JobStore, finite
from emaki.params import GenerationParams
from emaki.training.params import TrainingParams
from emaki.training.report import TrainingOutcome, TrainingUpdate

if TYPE_CHECKING:
    from emaki.xyz.run import GridImage, GridProgress, GridResult

#: An image the worker holds for a waiting client: a generation's, or a grid picture.
HeldImage: TypeAlias = "GeneratedImage | GridImage"

log = logging.getLogger("emaki.jobs")
HELD_SECONDS = 15 * 60  # images nobody collected are dropped after this long
LOSS_POINTS = 2000  # the loss series a training job reports: its last this many steps
STOPPED_NOTE = "stopped by a server stop; goes on from its last save at the next start"
RERUN_NOTE = "stopped by a server stop before it saved an image; run again at the next start"
STOPPED_SAVED_NOTE = ("stopped by a server stop after it saved images; ended with them, not run again "
                      "(its images would be made twice)")
RETRY_SECONDS = 1.0  # the store could not give the next job: wait this long before asking again


@dataclass(frozen=True)
class TrainingState:
    """The latest step of a running training job, as the event stream and `/progress` show it."""

    kind: str
    name: str
    step: int
    total: int
    first_step: int  # the step the run started from (a resumed file's)
    loss: float | None  # None on a roll-back (the loss was not finite)
    learn_rate: float
    epoch: int
    epoch_step: int
    rollbacks: int
    message: str | None  # the latest roll-back or failed preview, in words
    losses: list[list[float]] = field(default_factory=list)  # [[step, loss], ...], the last LOSS_POINTS
    preview: str | None = None  # the latest preview image, base64 PNG

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "total": self.total, "loss": self.loss, "learn_rate": self.learn_rate,
                "epoch": self.epoch, "epoch_step": self.epoch_step, "rollbacks": self.rollbacks,
                "message": self.message, "losses": self.losses, "preview": self.preview}

    def textinfo(self) -> str:
        """ "Training embedding nekomimi: step 40/400, loss 0.1234" (A1111's `textinfo`)."""
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        return f"Training {self.kind} {self.name}: step {self.step}/{self.total}{loss}"


@dataclass
class RunningJob:
    """One running job's own controls and latest progress."""

    cancel: Cancel
    progress: Progress
    losses: deque[list[float]] = field(default_factory=lambda: deque(maxlen=LOSS_POINTS))  # a training job's
    stopped: bool = False  # interrupted by the server's stop (not by a user): it may go back in the queue


def _drawn(update: GenerationProgress) -> Image.Image | None:
    """The step's decoded (TAESD) preview when one is due; drawn here, in the generation thread."""
    return update.draw_preview() if update.draw_preview is not None else None


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
    preview: Image.Image | None = None  # the latest decoded (TAESD) preview, drawn instead of the map's
    training: TrainingState | None = None  # a training job's latest step
    cell: int = 0  # a grid job: the cell being made (1-based, in the order they run), of `cells`
    cells: int = 0
    cell_labels: tuple[str, ...] = ()  # its X, Y and Z labels
    file_job: str | None = None  # a merge or extraction job's kind: `step` of `steps` are bytes (layers)

    def preview_base64(self) -> str | None:
        """The latest latent (a training job: the latest preview image) as a base64 PNG (None
        before there is one)."""
        if self.training is not None:
            return self.training.preview
        if self.preview is not None:
            return png_base64(self.preview)
        if self.latent is None or self.preview_map is None:
            return None
        return png_base64(preview_image(self.latent, self.preview_map))

    @property
    def fraction(self) -> float:
        if not self.job_id or not self.steps or not self.batches:
            return 0.0
        done = min(1.0, (self.batch * self.steps + self.step) / (self.batches * self.steps))
        if self.cells:  # a grid: the cells before this one, and this one's share
            return min(1.0, (self.cell - 1 + done) / self.cells)
        return done

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the time so far."""
        if self.training is not None:  # from the steps this run made (a resumed run starts midway)
            made = self.training.step - self.training.first_step
            elapsed = time.time() - self.started
            return elapsed / made * (self.training.total - self.training.step) if made > 0 else 0.0
        done = self.fraction
        elapsed = time.time() - self.started
        return elapsed / done - elapsed if done > 0 else 0.0


def grid_images(result: GridResult) -> tuple[list[HeldImage], int]:
    """A grid's pictures in the order the gallery and A1111 list them — the grid, the Z
    sub-grids (when asked for and there are several Z values), every cell's images — and how
    many of them an A1111 client gets (the cells only with `include_lone_images`)."""
    spec, (_, _, nz) = result.plan.spec, result.plan.shape
    pictures: list[HeldImage] = [result.grid]
    if spec.include_sub_grids and nz > 1:
        pictures += result.sub_grids
    shown = len(pictures)
    pictures += [image for cell in result.cells for image in cell.images]
    return pictures, (len(pictures) if spec.include_lone_images else shown)


def grid_summary(result: GridResult, job_timestamp: str) -> dict:
    """What the store keeps of a finished (or interrupted) grid job: its params and spec, and
    the seeds and infotexts of every picture, the grid's first; `shown`: how many of them an
    A1111 client gets."""
    pictures, shown = grid_images(result)
    fields = parse_infotext(result.grid.infotext)
    made = [cell for cell in result.cells if cell.images]
    return {
        "params": result.plan.params.model_dump(),
        "spec": result.plan.spec.model_dump(),
        "seeds": [_seed_of(picture, result) for picture in pictures],
        "subseeds": [getattr(picture, "subseed", result.plan.params.subseed) for picture in pictures],
        "infotexts": [picture.infotext for picture in pictures],
        "shown": shown,
        "cells": len(result.cells),
        "cells_done": len(made),
        "interrupted": result.interrupted,
        "model_name": fields.get("Model"),
        "model_hash": fields.get("Model hash"),
        "vae_name": fields.get("VAE"),
        "vae_hash": fields.get("VAE hash"),
        "job_timestamp": job_timestamp,
    }


def _seed_of(picture: HeldImage, result: GridResult) -> int:
    """A cell image's seed; a grid picture's is its grid's (A1111 names the file after it)."""
    return picture.seed if isinstance(picture, GeneratedImage) else result.plan.params.seed


def result_summary(result: Generated, job_timestamp: str) -> dict:
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
    """Runs queued jobs in background threads, `executor.slots` at once."""

    def __init__(self, store: JobStore, executor: Executor, files: FileJobs | None = None) -> None:
        self.store = store
        self.executor = executor
        self.files = files  # runs merge and LoRA extraction jobs here, where the model files are
        self._lock = threading.Lock()
        self._running: dict[str, RunningJob] = {}  # by job id, in the order they started
        self._idle = Progress()  # what `progress()` reports while nothing runs (replaced as a job ends)
        self._last_cancel = Cancel()  # the latest job's, reported while nothing runs (A1111's state)
        self._held: dict[str, tuple[float, list[HeldImage]]] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current = threading.local()  # the job id each thread runs: callbacks come in its thread
        self._fault: str | None = None  # why the latest job could not be written (None once one is)

    # --- life cycle ---

    def start(self) -> None:
        self._stopping.clear()
        lanes = max(1, self.executor.slots)
        self._threads = [threading.Thread(target=self._loop, name="emaki-worker" + (f"-{i}" if i else ""),
                                          daemon=True) for i in range(lanes)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish (or interrupt) the running jobs, then stop taking new ones."""
        self._stopping.set()
        with self._lock:
            for running in self._running.values():
                if not running.cancel.interrupt.is_set():  # a user's interrupt stays the user's
                    running.stopped = True
                running.cancel.interrupt.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        refused = None  # the store's latest refusal, logged once, not every retry
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next(timeout=0.5)
                refused = None
                if job is not None:
                    self.run_job(job)
            except StorageError as e:  # the job stays queued; `faults` (the store's) says why
                if str(e) != refused:
                    log.error("could not take the next job (retrying every %s s): %s", RETRY_SECONDS, e)
                refused = str(e)
                self._stopping.wait(RETRY_SECONDS)
            except Exception:  # a bug must not stop the queue
                log.exception("the worker loop failed; going on")
                self._stopping.wait(RETRY_SECONDS)

    def faults(self) -> list[str]:
        """Why jobs are not being run or recorded now (empty when all is well): the store's
        failed writes, a job whose images or end could not be written, a stopped thread."""
        found = self.store.faults()
        with self._lock:
            if self._fault:
                found.append(self._fault)
        stopped = [thread for thread in self._threads if not thread.is_alive()]
        if stopped and not self._stopping.is_set():
            found.append("the worker thread has stopped: queued jobs will not run")
        return found

    # --- what the API reads ---

    def progress(self, job_id: str | None = None) -> Progress:
        """The latest progress of the running job `job_id` (idle when it is not running); with
        none, of the longest-running job. The same object until it changes."""
        with self._lock:
            if job_id is not None:
                running = self._running.get(job_id)
                return running.progress if running is not None else self._idle
            for running in self._running.values():
                return running.progress
            return self._idle

    @property
    def cancel(self) -> Cancel:
        """The cancel flags of the job `progress()` reports (the latest job's while idle)."""
        with self._lock:
            for running in self._running.values():
                return running.cancel
            return self._last_cancel

    def take_held(self, job_id: str) -> list[HeldImage] | None:
        with self._lock:
            held = self._held.pop(job_id, None)
        return held[1] if held is not None else None

    def interrupt_job(self, job_id: str | None = None) -> bool:
        """Interrupt the running job `job_id`; with none, every running job (A1111's interrupt)."""
        with self._lock:
            chosen = [r for i, r in self._running.items() if job_id is None or i == job_id]
        for running in chosen:
            running.cancel.interrupt.set()
        return bool(chosen)

    # --- running ---

    def _mine(self) -> RunningJob | None:
        """The job the calling thread runs (progress callbacks come in that thread)."""
        with self._lock:
            return self._running.get(getattr(self._current, "job_id", None) or "")

    def _update(self, running: RunningJob, progress: Progress) -> None:
        with self._lock:
            running.progress = progress

    def _on_progress(self, update: GenerationProgress) -> None:
        running = self._mine()
        if running is None:
            return
        latest = replace(running.progress, batch=update.batch, batches=update.batches, step=update.step,
                         steps=update.steps, latent=update.latent[0].detach().float().cpu().numpy().copy(),
                         preview_map=update.preview_map,
                         preview=drawn if (drawn := _drawn(update)) is not None else running.progress.preview)
        self._update(running, latest)

    def _on_grid(self, update: GridProgress) -> None:
        """Called by the grid as each cell starts (no `generation`) and after each of its steps."""
        if update.generation is not None:
            self._on_progress(update.generation)
            return
        running = self._mine()
        if running is not None:  # a new cell: its steps start from nothing
            self._update(running, replace(running.progress, cell=update.cell, cells=update.cells,
                                          cell_labels=update.labels, batch=0, step=0))

    def _on_training(self, update: TrainingUpdate) -> None:
        """Called by the trainer after each step, in this thread."""
        running = self._mine()
        if running is None:
            return
        current = running.progress
        previous = current.training
        loss = update.loss if math.isfinite(update.loss) else None
        if loss is not None:
            running.losses.append([update.step, loss])
        preview = previous.preview if previous is not None else None
        if update.preview is not None:
            try:
                preview = base64.b64encode(update.preview.read_bytes()).decode("ascii")
            except OSError as e:
                log.warning("training preview %s unreadable: %s", update.preview, e)
        state = TrainingState(
            kind=update.kind, name=update.name, step=update.step, total=update.total,
            first_step=previous.first_step if previous is not None else update.step - 1, loss=loss,
            learn_rate=update.learn_rate, epoch=update.epoch, epoch_step=update.epoch_step,
            rollbacks=update.rollbacks,
            message=update.message or (previous.message if previous is not None else None),
            losses=list(running.losses), preview=preview)
        self._update(running, replace(current, batch=0, batches=1, step=update.step, steps=update.total,
                                      training=state))

    def run_job(self, job: Job) -> None:
        started = time.time()
        running = RunningJob(Cancel(), Progress(job_id=job.id, started=started))
        with self._lock:
            # `stop` sets the flag, then interrupts what is in `_running`: a job taken meanwhile
            # (a requeued one, by another lane) would run on uninterrupted.
            stopping = self._stopping.is_set()
            if not stopping:
                self._running[job.id] = running
                self._last_cancel = running.cancel
        if stopping:
            self._put_back(job.id, None, ran=False)
            return
        self._current.job_id = job.id
        try:
            self._run(job, running, started)
        finally:  # ended (`_finish` let it go already) or put back in the queue
            self._current.job_id = None
            self._let_go(job.id)

    def _run(self, job: Job, running: RunningJob, started: float) -> None:
        if job.kind in FILE_JOB_KINDS:
            self._file_job(job, running)
            return
        if job.kind == "train":
            self._train(job, running)
            return
        timestamp = time.strftime("%Y%m%d%H%M%S", time.localtime(started))
        if job.kind == "grid":
            self._grid(job, running, timestamp)
            return
        try:
            if job.kind == "sd-upscale":
                result = self._sd_upscale(job, running)
            else:
                params = GenerationParams.create(**job.params)
                result = self.executor.run(params, progress=self._on_progress, cancel=running.cancel,
                                           save=job.keep)
            self._record(job, result, timestamp)
        except EmakiError as e:
            # The batches finished before an interrupt or a failure are kept (the engine has
            # written them): they go into the gallery, and back to an A1111 client, as in A1111.
            partial: Generated | None = getattr(e, "result", None)
            self._generation_ended(job, running, e, None if partial is None or not partial.images else
                                   lambda **end: self._record(job, partial, timestamp, **end))
        except Exception as e:  # noqa: BLE001 (a bug must not kill the worker; the job records it, logged)
            self._end_on_bug(job, e)

    def _sd_upscale(self, job: Job, running: RunningJob) -> Generated:
        """Run A1111's "SD upscale" script (`params`: the img2img params, with the script's
        `upscaler`, `scale` and `overlap` under "sd_upscale"); its progress counts the tiles as
        batches. Its end is recorded as a generation's: interrupted, it keeps the picture with the
        tiles finished."""
        run = getattr(self.executor, "sd_upscale", None)
        if run is None:
            raise EmakiError("sd-upscale job: this worker's executor runs no SD upscale jobs")
        fields = dict(job.params)
        script = fields.pop("sd_upscale")
        result: Generated = run(GenerationParams.create(**fields), upscaler=str(script["upscaler"]),
                                scale=float(script["scale"]), overlap=int(script["overlap"]),
                                progress=self._on_progress, cancel=running.cancel, save=job.keep)
        return result

    def _grid(self, job: Job, running: RunningJob, timestamp: str) -> None:
        """Run an X/Y/Z plot job; an interrupt or a failing cell keeps the cells made and the
        partial grid (the gallery's, and an A1111 client's)."""
        from emaki.xyz.spec import GridSpec  # the grid code loads with the first grid job

        try:
            params = GenerationParams.create(**job.params["params"])
            spec = GridSpec.create(**job.params["spec"])
            result = self.executor.grid(params, spec, progress=self._on_grid, cancel=running.cancel,
                                        save=job.keep)
            self._record_grid(job, result, timestamp)
        except EmakiError as e:
            partial: GridResult | None = getattr(e, "result", None)  # only once a cell made an image
            self._generation_ended(job, running, e, None if partial is None else
                                   lambda **end: self._record_grid(job, partial, timestamp, **end))
        except Exception as e:  # noqa: BLE001 (a bug must not kill the worker; the job records it, logged)
            self._end_on_bug(job, e)

    def _file_job(self, job: Job, running: RunningJob) -> None:
        """Run a merge or LoRA extraction job; its progress is bytes (layers) done of the total.
        Cancelled, it ends `interrupted` and leaves no file."""
        def on_progress(done: int, total: int) -> None:
            self._update(running, replace(running.progress, batch=0, batches=1, step=done, steps=total,
                                          file_job=job.kind))

        try:
            if self.files is None:
                raise EmakiError(f"{job.kind} job: this worker runs no merge or extraction jobs")
            result = self.files.run(job.kind, job.params, progress=on_progress, cancel=running.cancel.interrupt)
        except EmakiError as e:
            self._end_on_error(job, e, None)
            return
        except Exception as e:  # noqa: BLE001 (a bug must not kill the worker; the job records it, logged)
            self._end_on_bug(job, e)
            return
        self._finish(job.id, "done", result=result)

    def _generation_ended(self, job: Job, running: RunningJob, error: EmakiError,
                          record_made: Callable[..., None] | None) -> None:
        """End a generation, grid or SD upscale job on `error`, as `_end_on_error` does; but one
        kept job the server's stop interrupted goes back in the queue when it saved nothing
        (`record_made` is None), and ends with a note saying why it is not run again otherwise."""
        by_stop = isinstance(error, Interrupted) and running.stopped and job.keep
        if by_stop and record_made is None:
            self._put_back(job.id, RERUN_NOTE)
            return
        self._end_on_error(job, error, record_made, note=STOPPED_SAVED_NOTE if by_stop else None)

    def _end_on_error(self, job: Job, error: EmakiError, record_made: Callable[..., None] | None,
                      note: str | None = None) -> None:
        """End `job` on `error`: `interrupted`, or `failed` with the reason; what it made before
        is recorded by `record_made` (given the end's `status`, `error`, `failure` and `note`), if any."""
        status, reason = ("interrupted", "interrupted") if isinstance(error, Interrupted) else ("failed", str(error))
        failure = self._failure(job, error) if status == "failed" else None
        if record_made is not None:
            record_made(status=status, error=reason, failure=failure, note=note)
        else:
            self._finish(job.id, status, error=reason, result=failure,
                         note=error.note if isinstance(error, RemoteFailure) else note)

    def _end_on_bug(self, job: Job, error: Exception) -> None:
        log.exception("%s job %s failed", job.kind, job.id)
        self._finish(job.id, "failed", error=f"internal error: {type(error).__name__}: {error}",
                     result=self._failure(job, error))

    def _record_grid(self, job: Job, result: GridResult, job_timestamp: str, status: str = "done",
                     error: str | None = None, failure: dict[str, Any] | None = None,
                     note: str | None = None) -> None:
        pictures, shown = grid_images(result)
        records = []
        if job.keep:
            params = result.plan.params
            prompts = {id(image): cell.cell.params for cell in result.cells for image in cell.images}
            for picture in pictures:
                if picture.path is None:
                    continue
                own = prompts.get(id(picture), params)
                records.append(ImageRecord(picture.path, _seed_of(picture, result), own.prompt, own.negative_prompt,
                                           parse_infotext(picture.infotext).get("Model", ""), picture.image.width,
                                           picture.image.height, picture.infotext))
        else:
            self._hold(job.id, pictures[:shown])
        self._finish(job.id, status, result=grid_summary(result, job_timestamp) | (failure or {}), images=records,
                     error=error, note=note)

    def _hold(self, job_id: str, images: list[HeldImage]) -> None:
        """Keep a job's images for the client waiting on it (dropping what nobody collected)."""
        now = time.time()
        with self._lock:
            self._held = {k: v for k, v in self._held.items() if now - v[0] < HELD_SECONDS}
            self._held[job_id] = (now, images)

    def _failure(self, job: Job, error: BaseException) -> dict[str, Any]:
        """What a failed job's `result` says of its error (`error_type`: `StorageFull` for a full
        disk, whatever raised it); a full disk is also a fault until a job is written again."""
        if disk_full(error):
            self._set_fault(f"job {job.id} could not be written: {error}")
            return {"error_type": "StorageFull"}
        if isinstance(error, RemoteFailure):  # the error the worker elsewhere met
            return {"error_type": error.error_type}
        return {"error_type": type(error).__name__}

    def _set_fault(self, fault: str | None) -> None:
        with self._lock:
            self._fault = fault

    def _train(self, job: Job, running: RunningJob) -> None:
        try:
            params = TrainingParams.create(**job.params)
            if job.attempts > 1 and self.executor.resumable(params):  # it ran before (a stop, a crash)
                params = params.model_copy(update={"resume": True, "overwrite": False})
            outcome: TrainingOutcome = self.executor.train(params, progress=self._on_training,
                                                           cancel=running.cancel.interrupt)
        except EmakiError as e:
            status, error = ("interrupted", "interrupted") if isinstance(e, Interrupted) else ("failed", str(e))
            self._finish(job.id, status, result=self._failure(job, e), error=error)
            return
        except Exception as e:  # a bug must not kill the worker; the job records it
            log.exception("training job %s failed", job.id)
            self._finish(job.id, "failed", result=self._failure(job, e),
                         error=f"internal error: {type(e).__name__}: {e}")
            return
        if outcome.cancelled and running.stopped:
            self._put_back(job.id, STOPPED_NOTE)
            return
        self._finish(job.id, "interrupted" if outcome.cancelled else "done", result=finite(outcome.as_json()),
                     error="interrupted" if outcome.cancelled else None)

    def _put_back(self, job_id: str, note: str | None, *, ran: bool = True) -> None:
        """Put a job the server's stop stopped back in the queue (see `JobStore.requeue`). Should
        the store refuse, the job stays `running`, and the next start's `recover` requeues it."""
        self._let_go(job_id)
        try:
            self.store.requeue(job_id, note, ran=ran)
        except StorageError as e:
            log.error("job %s could not be put back in the queue (the next start retries it): %s", job_id, e)

    def _let_go(self, job_id: str) -> None:
        """The job no longer runs here: its progress is no longer reported."""
        with self._lock:
            if self._running.pop(job_id, None) is not None and not self._running:
                self._idle = Progress()  # a new snapshot: watchers see the change

    def _finish(self, job_id: str, status: str, *, images: Sequence[ImageRecord] = (),
                result: dict[str, Any] | None = None, error: str | None = None, note: str | None = None) -> None:
        # Let go before the job ends: whoever its end wakes must not see it as still in progress.
        self._let_go(job_id)
        try:
            self.store.finish(job_id, status, images=images, result=result, error=error, note=note)
        except StorageError as e:
            self._unrecorded(job_id, e, error)
            return
        if status == "done":
            self._set_fault(None)

    def _unrecorded(self, job_id: str, cause: StorageError, error: str | None) -> None:
        """The store could not record how the job ended: record it as failed with why (a
        smaller write: no gallery rows, only the error's type), else have the store hold that in
        memory."""
        log.error("job %s: could not record its end: %s", job_id, cause)
        why = f"{error}; then " if error and error != "interrupted" else ""
        reason = f"{why}its end could not be recorded: {cause}"
        result = {"error_type": type(cause).__name__}
        self._set_fault(f"job {job_id} failed: {reason}")
        try:
            self.store.finish(job_id, "failed", result=result, error=reason)
        except StorageError:
            self.store.keep_failure(job_id, reason, result)

    def _record(self, job: Job, result: Generated, job_timestamp: str, status: str = "done",
                error: str | None = None, failure: dict[str, Any] | None = None, note: str | None = None) -> None:
        records = []
        # Interrupted while sampling: the batch as far as it got, for an A1111 client (as A1111
        # answers), never in the gallery (it was not written).
        unfinished: list[GeneratedImage] = list(getattr(result, "unfinished", []))
        if job.keep:
            for image in result.images:
                assert image.path is not None  # the engine wrote it
                records.append(ImageRecord(image.path, image.seed, result.params.prompt,
                                           result.params.negative_prompt, result.model.name,
                                           image.image.width, image.image.height, image.infotext))
            if unfinished:
                self._hold(job.id, [*unfinished])
        else:
            self._hold(job.id, [*result.images, *unfinished])
        # A job made elsewhere may say how it ran (retried after its worker died).
        note = "; ".join(filter(None, [getattr(result, "note", None), note])) or None
        summary = result_summary(result, job_timestamp) | (failure or {})
        if unfinished:
            summary["unfinished"] = [{"seed": image.seed, "subseed": image.subseed, "infotext": image.infotext}
                                     for image in unfinished]
        self._finish(job.id, status, result=summary, images=records, error=error, note=note)

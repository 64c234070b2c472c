"""`emaki serve --executor ray`: the server's generation jobs on Ray actors, one job per actor at a
time; X/Y/Z grids and training stay on the head's own engine (`local`).

The head stays the only writer: an actor returns PNG bytes, infotext and facts
(`emaki.jobs.rendered`), and the head names and writes the files (the same `<nnnnn>-<seed>.png`
in the dated outputs folder the engine writes, each claimed whole with a hard link) and records
the job. The prompt policy judges the params on the head before they are sent, and the actor
judges them again.

While an actor renders, the head polls it (`ServeActor.poll`, every `POLL_S`) for the latest
step and latent: progress and previews as the local engine gives them, one snapshot per poll,
nothing queued. An interrupt or skip set on the head is sent to the actor (again at every poll
until the render ends, so one sent before the render started is not lost); the engine stops
within a step. The actor is a threaded Ray actor so that these calls run beside `render`.

An actor that dies mid-job (its process killed, its node lost) costs the job one retry on
another actor, noted on the job; a second death fails it with both reasons. An actor whose
process died is restarted by Ray and stays in the pool once it answers again; one ended for good
(`ray.kill`, a lost node) is dropped. Ray is imported only by `RayServeExecutor.connect` (and
the actors).
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emaki.engine.output import dated_folder, save_png_bytes
from emaki.engine.policy import ensure_params_allowed
from emaki.engine.run import (
    Cancel,
    GeneratedImage,
    GenerationProgress,
    GenerationResult,
    ProgressCallback,
)
from emaki.errors import EmakiError, Interrupted
from emaki.jobs.executor import LocalExecutor, RemoteFailure, RemoteModel, RemoteResult
from emaki.jobs.faults import WorkersUnavailable
from emaki.jobs.ray_executor import (
    CallFailed,
    RayCluster,
    Slot,
    WorkerLost,
    first_line,
    worker_slot,
)
from emaki.jobs.ray_executor import join_cluster as join_ray_cluster
from emaki.jobs.rendered import PNG_END, JobOutcome, JobRequest
from emaki.params import GenerationParams

if TYPE_CHECKING:
    from emaki.training.params import TrainingParams
    from emaki.training.report import TrainingCallback, TrainingOutcome
    from emaki.workspace import Workspace
    from emaki.xyz.run import GridProgressCallback, GridResult
    from emaki.xyz.spec import GridSpec

log = logging.getLogger("emaki.jobs.ray")
HEAD_FILES = ("model", "vae", "init_image", "mask")  # params naming the head's files: the record keeps its names
INPUT_FIELDS = ("init_image", "mask")  # images a job starts from: sent to the actor as bytes
LOST = WorkersUnavailable.__name__  # the error type of a job no worker could finish (HTTP 503)
POLL_S = 0.2  # how often the head asks a rendering actor for its latest step
ACTOR_CALLS = 3  # calls an actor runs at once: a render, and the head's polls and interrupts beside it
PING_S = 120.0  # how long the head waits for a suspect actor to answer (Ray restarting it) before dropping it
RESTART_POLL_S = 0.2  # how often it asks again while Ray restarts the actor


@dataclass(frozen=True)
class StepReport:
    """An actor's latest step, as the head's progress callback needs it."""

    key: str
    batch: int
    batches: int
    step: int
    steps: int
    latent: np.ndarray  # the batch's first latent
    preview_map: np.ndarray | None


class ServeActor:
    """The body of a server's Ray actor: an `EngineSlot` on the worker's own workspace that
    reports its latest step and takes interrupts while it renders."""

    def __init__(self, threads: int | None, precision: str | None, compile: bool = False) -> None:
        self.slot = worker_slot(threads, precision, compile)
        self._rendering = threading.Lock()  # one render at a time (the head sends one)
        self._lock = threading.Lock()  # the fields below: read by `poll`, set by `render`
        self._key: str | None = None
        self._cancel = Cancel()
        self._latest: StepReport | None = None

    def render(self, key: str, fields: dict[str, Any], inputs: dict[str, bytes] | None = None) -> JobOutcome:
        """`fields` as `EngineSlot.render` takes them; `inputs`: the init image and mask the
        head sent (field → PNG bytes), kept in a temp folder for the render."""
        with self._rendering, tempfile.TemporaryDirectory(prefix="emaki-inputs-") as folder:
            cancel = Cancel()
            with self._lock:
                self._key, self._cancel, self._latest = key, cancel, None
            fields = self._found_here(fields)
            for field, data in (inputs or {}).items():
                path = Path(folder) / f"{field}.png"
                path.write_bytes(data)
                fields[field] = str(path)

            def on_step(update: GenerationProgress) -> None:
                report = StepReport(key, update.batch, update.batches, update.step, update.steps,
                                    update.latent[0].detach().float().cpu().numpy().copy(), update.preview_map)
                with self._lock:
                    self._latest = report

            try:
                return self.slot.render(key, fields, progress=on_step, cancel=cancel)
            finally:
                with self._lock:
                    self._key = None

    def _found_here(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The head names files by its own paths: one that does not exist on this worker is looked
        up by its file name in the worker's own model folders (the demo model by its name)."""
        found = dict(fields)
        for field in ("model", "vae"):
            value = found.get(field)
            if value and not Path(value).exists():
                found[field] = Path(value).name
        return found

    def poll(self, key: str) -> StepReport | None:
        with self._lock:
            return self._latest if self._key == key else None

    def interrupt(self, key: str) -> None:
        with self._lock:
            if self._key == key:
                self._cancel.interrupt.set()

    def skip(self, key: str) -> None:
        with self._lock:
            if self._key == key:
                self._cancel.skip.set()

    def running(self) -> dict[str, Any] | None:
        """What it renders now (key, batch, step, steps), None when idle: for a look from outside."""
        with self._lock:
            if self._key is None:
                return None
            latest = self._latest
            steps = {"batch": latest.batch, "step": latest.step, "steps": latest.steps} if latest else {}
            return {"key": self._key} | steps

    def ping(self) -> str:
        return self.slot.ping()


class ActorPool:
    """The head's actors, each lent to one job at a time: an idle one holding the job's model
    first (model affinity), else any idle one; a retry avoids the actor whose death cost the
    last attempt while another lives."""

    def __init__(self, cluster: RayCluster, workers: int) -> None:
        self.cluster = cluster
        self.slots = [Slot(index, cluster.start()) for index in range(workers)]
        self._changed = threading.Condition()

    def take(self, model: str, cancel: Cancel, avoid: int | None = None) -> Slot:
        """An idle actor for a job needing `model`, waiting for one; `RemoteFailure` once none
        lives, `Interrupted` once `cancel` is set while waiting."""
        with self._changed:
            while True:
                if cancel.interrupt.is_set():
                    raise Interrupted("interrupted")
                alive = [slot for slot in self.slots if slot.alive]
                if not alive:
                    raise RemoteFailure("no worker left: every actor of the pool died", LOST)
                others = [slot for slot in alive if slot.index != avoid] or alive
                idle = [slot for slot in others if slot.in_flight == 0]
                if idle:
                    slot = min(idle, key=lambda s: (s.model != model, s.index))
                    slot.in_flight, slot.model = 1, model
                    return slot
                self._changed.wait(POLL_S)

    def give_back(self, slot: Slot) -> None:
        with self._changed:
            slot.in_flight = 0
            self._changed.notify_all()

    def lost(self, slot: Slot) -> None:
        """`slot`'s actor failed a call: keep it once a ping says Ray restarted it (its engine is
        new, its model gone), else drop it. The pings run in a thread of their own, so the job
        that met the death goes on to its retry at once; the slot stays lent until they end."""
        threading.Thread(target=self._probe, args=(slot,), name=f"emaki-ray-probe-{slot.index}",
                         daemon=True).start()

    def _probe(self, slot: Slot) -> None:
        # A killed process is restarted by Ray (`ACTOR_RESTARTS`); until it is up again, a call
        # fails at once with ActorUnavailableError ("restarting"), so ask again until `PING_S`.
        ray = self.cluster.ray
        deadline = time.monotonic() + PING_S
        while True:
            try:
                ray.get(self.cluster.ping(slot.actor), timeout=max(0.0, deadline - time.monotonic()))
                slot.model = None
                log.info("worker %s restarted by Ray: back in the pool", slot.index)
                break
            except ray.exceptions.ActorUnavailableError as e:
                if time.monotonic() < deadline:
                    time.sleep(RESTART_POLL_S)
                    continue
                self._drop(slot, e)
                break
            except Exception as e:  # noqa: BLE001 (any other failure to answer: the actor is gone)
                self._drop(slot, e)
                break
        self.give_back(slot)

    def _drop(self, slot: Slot, error: Exception) -> None:
        with self._changed:
            if not slot.alive:  # the pool was closed meanwhile
                return
            slot.alive = False
        log.warning("worker %s dropped: %s", slot.index, first_line(error))
        self.cluster.stop(slot.actor)

    def close(self) -> None:
        with self._changed:
            for slot in self.slots:
                if slot.alive:
                    slot.alive = False
                    self.cluster.stop(slot.actor)
            self._changed.notify_all()


def inputs_of(params: GenerationParams) -> dict[str, bytes]:
    """The images a job starts from (its init image, its mask), read here to travel with it."""
    inputs = {}
    for field in INPUT_FIELDS:
        path = getattr(params, field)
        if path:
            try:
                inputs[field] = Path(path).read_bytes()
            except OSError as e:
                raise EmakiError(f"{field}: cannot read {path} to send it to a worker ({e.strerror or e})") from None
    return inputs


class RayServeExecutor:
    """The server's executor on a Ray cluster: generations on the actors, `slots` of them at once;
    grids and training on `local` (the head's engine)."""

    def __init__(self, pool: ActorPool, local: LocalExecutor, workspace: Workspace,
                 on_close: Any = None) -> None:
        self.pool = pool
        self.local = local
        self.workspace = workspace  # the head's: where kept images are written
        self.slots = len(pool.slots)
        self._on_close = on_close

    @classmethod
    def connect(cls, address: str | None, local: LocalExecutor, *, workers: int | None = None,
                threads: int = 1, precision: str | None = None, compile: bool = False) -> RayServeExecutor:
        """Join the cluster at `address` (`auto`, host:port; `local` or None: start one in this
        process, stopped again by `close`) and start `workers` actors of `threads` threads
        (`compile`: each compiles its UNet, `--compile`)."""
        room = join_ray_cluster(None if address in (None, "local") else address, workers, threads)
        cluster = RayCluster(ServeActor, (threads, precision, compile), threads=threads, gpus=room.gpus,
                             concurrency=ACTOR_CALLS)
        return cls(ActorPool(cluster, room.workers), local, local.engine.workspace, room.on_close)

    # --- what stays on the head ---

    def grid(self, params: GenerationParams, spec: GridSpec, *, progress: GridProgressCallback | None,
             cancel: Cancel, save: bool) -> GridResult:
        return self.local.grid(params, spec, progress=progress, cancel=cancel, save=save)

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None,
              cancel: threading.Event) -> TrainingOutcome:
        return self.local.train(params, progress=progress, cancel=cancel)

    def resumable(self, params: TrainingParams) -> bool:
        return self.local.resumable(params)

    def sd_upscale(self, params: GenerationParams, *, upscaler: str, scale: float, overlap: int,
                   progress: ProgressCallback | None, cancel: Cancel, save: bool) -> GenerationResult:
        return self.local.sd_upscale(params, upscaler=upscaler, scale=scale, overlap=overlap, progress=progress,
                                     cancel=cancel, save=save)

    def close(self) -> None:
        self.pool.close()
        if self._on_close is not None:
            self._on_close()

    # --- generations, on the actors ---

    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> RemoteResult:
        """Generate `params` on an actor (once more on another if it dies); write the images
        here when `save`. `Interrupted` and `RemoteFailure` carry what was made as `result`."""
        ensure_params_allowed(params)  # judged here before it is sent; the actor judges it again
        request = JobRequest(uuid.uuid4().hex, params)
        inputs = inputs_of(params)
        retried: str | None = None
        avoid: int | None = None
        while True:
            try:
                slot = self.pool.take(request.model, cancel, avoid)
            except RemoteFailure as e:  # no actor left: say what the first attempt met
                if retried is None:
                    raise
                raise RemoteFailure(f"{e} ({retried})", e.error_type, note=f"retried: {retried}") from None
            try:
                outcome = self._render(slot, request, inputs, progress, cancel)
            except WorkerLost as e:
                reason = f"worker {slot.index} died: {first_line(e)}"
                log.warning("job %s: %s", request.key, reason)
                self.pool.lost(slot)
                if retried is not None:
                    raise RemoteFailure(f"its worker died twice ({retried}; then {reason})", LOST,
                                        note=f"retried: {retried}") from None
                retried, avoid = reason, slot.index
                continue
            except CallFailed as e:
                self.pool.give_back(slot)
                raise RemoteFailure(f"internal error on worker {slot.index}: {first_line(e)}", "CallFailed") from None
            except BaseException:
                self.pool.give_back(slot)
                raise
            self.pool.give_back(slot)
            return self._ended(params, outcome, save, f"retried: {retried}" if retried else None)

    def _render(self, slot: Slot, request: JobRequest, inputs: dict[str, bytes], progress: ProgressCallback | None,
                cancel: Cancel) -> JobOutcome:
        """Run `request` on `slot`'s actor, passing its steps to `progress` and `cancel` to it."""
        ray, actor, key = self.pool.cluster.ray, slot.actor, request.key
        ref = actor.render.remote(key, request.params.model_dump(), inputs)
        shown: tuple[int, int] | None = None
        while not ray.wait([ref], timeout=POLL_S)[0]:
            if cancel.interrupt.is_set():
                actor.interrupt.remote(key)
            if cancel.skip.is_set():  # taken, as the engine takes it
                cancel.skip.clear()
                actor.skip.remote(key)
            if progress is not None:
                shown = self._show_step(actor, key, progress, shown)
        outcome: JobOutcome = self.pool.cluster.get(ref)
        return outcome

    def _show_step(self, actor: Any, key: str, progress: ProgressCallback,
                   shown: tuple[int, int] | None) -> tuple[int, int] | None:
        """Pass the actor's latest step on to `progress` (once each); which step was shown."""
        import torch

        ray = self.pool.cluster.ray
        try:
            report: StepReport | None = ray.get(actor.poll.remote(key), timeout=POLL_S)
        except Exception:  # noqa: BLE001 (busy or gone: the render's own answer says which)
            return shown
        if report is None or (report.batch, report.step) == shown:
            return shown
        progress(GenerationProgress(report.batch, report.batches, report.step, report.steps,
                                    torch.tensor(report.latent[None]), report.preview_map))
        return report.batch, report.step

    def _ended(self, params: GenerationParams, outcome: JobOutcome, save: bool, note: str | None) -> RemoteResult:
        """The job's result, its images written here when `save`; an error raised with it."""
        # As run (seeds resolved, size filled in), naming the head's own files as the request did.
        ran = (GenerationParams.create(**outcome.ran).model_copy(update={f: getattr(params, f) for f in HEAD_FILES})
               if outcome.ran else params)
        facts = outcome.facts
        model = RemoteModel(str(facts.get("model") or ran.model or ""), facts.get("model_hash"), facts.get("vae"),
                            facts.get("vae_hash"))
        result = RemoteResult(ran, model, [self._image(image, save) for image in outcome.images], note)
        if outcome.error is None:
            return result
        error: EmakiError = (Interrupted(outcome.error) if outcome.error_type == "Interrupted"
                             else RemoteFailure(outcome.error, outcome.error_type or "EmakiError", note))
        # What was made goes with the error, as the engine's own errors carry it.
        error.result = result  # type: ignore[attr-defined]
        raise error

    def _image(self, image: Any, save: bool) -> GeneratedImage:
        from PIL import Image

        if not image.png.endswith(PNG_END):
            raise EmakiError("the worker returned a cut PNG")
        path = save_png_bytes(image.png, dated_folder(self.workspace.outputs), image.seed) if save else None
        return GeneratedImage(Image.open(io.BytesIO(image.png)), image.seed, image.subseed, image.infotext, path)

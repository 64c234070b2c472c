"""The Ray executor: jobs run on a Ray cluster's workers, one long-lived actor per worker slot,
each holding its own `Engine` (its own model cache, its own workspace: the worker's `EMAKI_HOME`,
where models are found by name; the demo model is bundled).

The head (this process) dispatches and stays the only writer: actors return PNG bytes, infotext
and facts (`emaki.jobs.rendered`). A job goes to an idle actor that already holds its checkpoint
when there is one (model affinity), else to the least busy. The prompt policy judges each job on
the head before it is sent and again on the worker. An actor that dies mid-job (its process
killed, its node lost) costs that job one retry on another actor, recorded in the outcome
(`attempts`, `retried`); a job whose worker dies twice fails with the reason. The dead actor
gets work again once Ray has restarted its process (a ping answers), or is dropped when it is
gone for good.

Ray is imported only when a `RayCluster` is made (`emaki batch --executor ray`): importing this
module loads nothing of it. The dispatching (`Dispatcher`) talks to Ray through the four calls of
`Cluster`, so its routing and retries are tested without a cluster.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from emaki.engine.policy import ensure_params_allowed
from emaki.errors import EmakiError, PolicyViolation
from emaki.jobs.rendered import EngineSlot, JobOutcome, JobRequest

log = logging.getLogger("emaki.jobs.ray")
QUEUE_DEPTH = 2  # jobs sent to an actor at once: one runs, one waits, so no actor idles on the round trip
ACTOR_RESTARTS = 3  # Ray restarts a crashed actor (a lost node: elsewhere) this often; ray.kill ends it for good
RESTART_POLL_S = 0.2  # while Ray restarts an actor its pings fail at once: how often to ask again
RESTART_PINGS = 600  # how many times (with RESTART_POLL_S between: 2 minutes) before dropping it


class WorkerLost(Exception):
    """The actor running a job died (or became unreachable) before answering."""


class WorkerRestarting(WorkerLost):
    """The actor's process died and Ray is starting it again: a call fails at once until it is up."""


class CallFailed(Exception):
    """The actor answered with an error of the call itself (a bug: `EngineSlot` reports its errors)."""


class Cluster(Protocol):
    """What the dispatcher needs of Ray (a fake in tests): start actors, send them calls, wait."""

    def start(self) -> Any:
        """A new actor (a handle)."""
        ...

    def submit(self, actor: Any, request: JobRequest) -> Any:
        """Send `request` to `actor`; a reference to its `JobOutcome`."""
        ...

    def ping(self, actor: Any) -> Any:
        """A reference that resolves once `actor` is up, or fails once it is gone for good."""
        ...

    def wait(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        """Block until at least one of `refs` (not empty) is ready, or `timeout` seconds have
        passed (then maybe none is); the ready ones."""
        ...

    def get(self, ref: Any) -> Any:
        """The value of a ready `ref`; `WorkerLost` when its actor died, `CallFailed` when the call raised."""
        ...

    def stop(self, actor: Any) -> None:
        ...


@dataclass
class Slot:
    """The head's view of one actor."""

    index: int
    actor: Any
    model: str | None = None  # the checkpoint it holds once its queued jobs ran (its engine keeps one)
    in_flight: int = 0
    suspect: bool = False  # a job of it failed: no new work until a ping says it is up
    alive: bool = True
    pings: int = 0  # pings answered "restarting" since it became suspect


@dataclass
class Task:
    request: JobRequest
    attempt: int = 1
    avoid: int | None = None  # the slot whose death cost the last attempt
    retried: str | None = None


@dataclass
class Dispatcher:
    """Runs requests on `workers` actors of `cluster`, `depth` jobs queued per actor at most."""

    cluster: Cluster
    workers: int
    depth: int = QUEUE_DEPTH
    slots: list[Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise EmakiError(f"workers: expected 1 or more, got {self.workers}")
        self.slots = [Slot(i, self.cluster.start()) for i in range(self.workers)]

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        """Each request's outcome as it ends (in any order); every request ends exactly once."""
        pending = deque(Task(request) for request in requests)
        running: dict[Any, tuple[Slot, Task]] = {}
        probes: dict[Any, Slot] = {}
        repings: list[tuple[float, Slot]] = []  # (when, slot): actors Ray is restarting, asked again then
        while pending or running:
            yield from self._dispatch(pending, running)
            if not pending and not running:  # the last ones were refused
                return
            if not running and not probes and not repings:  # every actor is gone: what is left cannot run
                for task in pending:
                    yield self._failed(task, "no worker left: every actor of the pool died")
                return
            now = time.monotonic()
            for due in [r for r in repings if r[0] <= now]:
                repings.remove(due)
                probes[self.cluster.ping(due[1].actor)] = due[1]
            # Wait for results, but no longer than the next re-ping is due: the other actors'
            # results are taken as they come while one restarts.
            delay = max(0.0, min(when for when, _ in repings) - now) if repings else None
            if not running and not probes:
                time.sleep(delay or 0.0)
                continue
            for ref in self.cluster.wait([*running, *probes], delay):
                if ref in probes:
                    self._probed(probes.pop(ref), ref, repings)
                    continue
                slot, task = running.pop(ref)
                slot.in_flight -= 1
                outcome = self._collect(ref, slot, task, pending, probes)
                if outcome is not None:
                    yield outcome

    def _collect(self, ref: Any, slot: Slot, task: Task, pending: deque[Task],
                 probes: dict[Any, Slot]) -> JobOutcome | None:
        """The task's outcome; or, its actor having died, None and the task back in the queue
        (once), the actor on probation."""
        try:
            outcome: JobOutcome = self.cluster.get(ref)
        except CallFailed as e:  # the same call would fail again: not retried
            return self._failed(task, f"internal error on worker {slot.index}: {first_line(e)}", "CallFailed")
        except WorkerLost as e:
            reason = f"worker {slot.index} died: {first_line(e)}"
            log.warning("job %s: %s", task.request.key, reason)
            if not slot.suspect and slot.alive:
                slot.suspect = True
                probes[self.cluster.ping(slot.actor)] = slot
            if task.attempt >= 2:
                return self._failed(task, f"its worker died twice ({task.retried}; then {reason})")
            pending.appendleft(Task(task.request, task.attempt + 1, slot.index, reason))
            return None
        return replace(outcome, attempts=task.attempt, retried=task.retried)

    def _probed(self, slot: Slot, ref: Any, repings: list[tuple[float, Slot]]) -> None:
        try:
            self.cluster.get(ref)
            slot.suspect = False  # restarted by Ray: its engine is new, its model gone
            slot.model = None
            slot.pings = 0
        except WorkerRestarting:  # not up yet: ask again later (this answer came at once)
            slot.pings += 1
            if slot.pings < RESTART_PINGS:
                repings.append((time.monotonic() + RESTART_POLL_S, slot))
                return
            slot.alive = False
            self.cluster.stop(slot.actor)
        except WorkerLost:
            slot.alive = False
            self.cluster.stop(slot.actor)

    def _dispatch(self, pending: deque[Task], running: dict[Any, tuple[Slot, Task]]) -> list[JobOutcome]:
        """Send queued tasks, in order, while some actor has room; a retry waits for an actor
        other than the one it lost, while another lives. Each task is judged by the prompt
        policy here, on the head, before it is first sent (the worker judges it again): the
        refused ones are returned, ended."""
        waiting: list[Task] = []
        refused: list[JobOutcome] = []
        while pending and any(self._has_room(slot) for slot in self.slots):
            task = pending.popleft()
            if task.attempt == 1:
                try:
                    ensure_params_allowed(task.request.params)
                except PolicyViolation as e:
                    refused.append(JobOutcome(task.request.key, error=str(e), error_type="PolicyViolation",
                                              attempts=0))
                    continue
            slot = self.route(task)
            if slot is None:
                waiting.append(task)
                continue
            slot.in_flight += 1
            slot.model = task.request.model
            running[self.cluster.submit(slot.actor, task.request)] = (slot, task)
        pending.extendleft(reversed(waiting))
        return refused

    def _has_room(self, slot: Slot) -> bool:
        return slot.alive and not slot.suspect and slot.in_flight < self.depth

    def route(self, task: Task) -> Slot | None:
        """An idle actor that holds the task's checkpoint; else the least busy (one holding the
        checkpoint first among equals). None: no actor can take it now."""
        others = [s for s in self.slots if s.alive and s.index != task.avoid]
        usable = others if others else [s for s in self.slots if s.alive]
        free = [s for s in usable if self._has_room(s)]
        if not free:
            return None
        model = task.request.model
        for slot in free:
            if slot.in_flight == 0 and slot.model == model:
                return slot
        return min(free, key=lambda s: (s.in_flight, s.model != model, s.index))

    @staticmethod
    def _failed(task: Task, reason: str, error_type: str = "WorkerLost") -> JobOutcome:
        return JobOutcome(task.request.key, error=reason, error_type=error_type, attempts=task.attempt,
                          retried=task.retried)

    def close(self) -> None:
        for slot in self.slots:
            if slot.alive:
                self.cluster.stop(slot.actor)
                slot.alive = False


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def worker_slot(threads: int | None, precision: str | None, compile: bool = False) -> EngineSlot:
    """The `EngineSlot` of a Ray worker process, on that worker's own workspace: an actor is the
    process's entry point, so like the CLI it reads its environment (EMAKI_HOME, EMAKI_A1111),
    and with `compile` keeps inductor's cache in that workspace as `emaki serve --compile` does."""
    from emaki.workspace import workspace_from_environment

    workspace = workspace_from_environment(os.environ)
    if compile:
        from emaki.engine.speed.compile import compile_cache_dir

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir(workspace.home)))
    return EngineSlot.on_workspace(workspace, threads, precision, compile)


class EngineActor:
    """The body of a Ray actor: an `EngineSlot` on the worker's own workspace."""

    def __init__(self, threads: int | None, precision: str | None) -> None:
        self.slot = worker_slot(threads, precision)

    def render(self, key: str, fields: dict[str, Any]) -> JobOutcome:
        return self.slot.render(key, fields)

    def ping(self) -> str:
        return self.slot.ping()


class RayCluster:
    """`Cluster` on Ray: actors of `actor_class(*args)`, each taking `threads` CPUs (and `gpus` GPUs)."""

    def __init__(self, actor_class: type = EngineActor, args: tuple[Any, ...] = (None, None), *,
                 threads: int = 1, gpus: float = 0, concurrency: int = 1) -> None:
        import ray

        self.ray = ray
        self.remote_class: Any = ray.remote(actor_class).options(
            num_cpus=threads, num_gpus=gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=0,
            max_concurrency=concurrency)
        self.args = args

    def start(self) -> Any:
        return self.remote_class.remote(*self.args)

    def submit(self, actor: Any, request: JobRequest) -> Any:
        return actor.render.remote(request.key, request.params.model_dump())

    def ping(self, actor: Any) -> Any:
        return actor.ping.remote()

    def wait(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        ready, rest = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if rest:  # take every other one already done too: one pass of the loop handles them all
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return list(ready)

    def get(self, ref: Any) -> Any:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as e:  # the method itself raised
            raise CallFailed(first_line(e)) from e
        except exceptions.ActorUnavailableError as e:  # its process died; Ray is restarting it
            raise WorkerRestarting(first_line(e)) from e
        except exceptions.RayError as e:  # the actor died, was lost with its node, or was out of memory
            raise WorkerLost(first_line(e)) from e

    def stop(self, actor: Any) -> None:
        self.ray.kill(actor)


@dataclass(frozen=True)
class ClusterRoom:
    """The actors to start on a joined cluster: how many, with a GPU each or not, and how to
    let go of the cluster (None: it was running before, it stays)."""

    workers: int
    gpus: int
    on_close: Callable[[], None] | None


def join_cluster(address: str | None, workers: int | None, threads: int) -> ClusterRoom:
    """Join the Ray cluster at `address` (`auto`: the one `ray start` runs here; None: start one
    in this process) unless this process has joined one already, and check it has room for
    `workers` actors of `threads` CPUs (default: one per GPU, else its CPUs / threads)."""
    try:
        import ray
    except ImportError:
        raise EmakiError("--executor ray: Ray is not installed (pip install 'emaki[ray]')") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EmakiError(f"--ray-address {address}: cannot join the Ray cluster ({first_line(e)})") from None
    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    room = int(resources["GPU"]) if gpus else int(resources.get("CPU", 0)) // threads
    if workers is None:
        workers = max(1, room)
    if workers > room:  # the actors past the cluster's room would never start, and their jobs never end
        what = f"{int(resources['GPU'])} GPUs" if gpus else f"{int(resources.get('CPU', 0))} CPUs"
        if started:
            ray.shutdown()
        raise EmakiError(f"--workers {workers}: the Ray cluster has {what}, room for {room} workers "
                         f"of {threads} threads")
    return ClusterRoom(workers, gpus, ray.shutdown if started else None)


class RayExecutor:
    """`emaki batch --executor ray`: the batch's requests on a pool of Ray actors."""

    def __init__(self, cluster: Cluster, workers: int, *, depth: int = QUEUE_DEPTH,
                 on_close: Callable[[], None] | None = None) -> None:
        self.dispatcher = Dispatcher(cluster, workers, depth)
        self._on_close = on_close

    @classmethod
    def connect(cls, address: str | None, *, workers: int | None = None, threads: int = 1,
                precision: str | None = None) -> RayExecutor:
        """Join the cluster at `address` (`auto`: the one `ray start` runs on this machine), or,
        with none, start one on this machine (stopped again by `close`); `workers` actors of
        `threads` CPU threads each (default: one per GPU, else the cluster's CPUs / threads)."""
        pool = join_cluster(address, workers, threads)
        cluster = RayCluster(EngineActor, (threads, precision), threads=threads, gpus=pool.gpus)
        return cls(cluster, pool.workers, on_close=pool.on_close)

    @property
    def actors(self) -> list[Any]:
        return [slot.actor for slot in self.dispatcher.slots]

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        return self.dispatcher.outcomes(requests)

    def close(self) -> None:
        self.dispatcher.close()
        if self._on_close is not None:
            self._on_close()

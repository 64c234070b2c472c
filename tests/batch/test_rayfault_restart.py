"""The batch dispatcher and an actor Ray restarts: its pings fail at once ("restarting") until
its new process is up; it gets work again, and is dropped only when it is gone for good. No Ray:
a fake cluster whose calls end when waited for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from emaki.jobs import ray_executor
from emaki.jobs.ray_executor import Dispatcher, WorkerLost, WorkerRestarting
from emaki.jobs.rendered import JobOutcome, JobRequest
from emaki.params import GenerationParams


@dataclass(eq=False)
class Call:
    actor: int
    key: str | None  # None: a ping


@dataclass
class RestartingCluster:
    """Actor 0's process dies when job `crash` is sent to it; its pings then answer "restarting"
    `restarting` times, then "up" (or, `gone`, it is lost for good)."""

    restarting: int
    gone: bool = False
    crashed: bool = False
    sent: list[tuple[int, str]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    started: int = 0

    def start(self) -> int:
        self.started += 1
        return self.started - 1

    def submit(self, actor: int, request: JobRequest) -> Call:
        self.sent.append((actor, request.key))
        self.crashed |= actor == 0 and request.key == "crash"
        call = Call(actor, request.key)
        self.calls.append(call)
        return call

    def ping(self, actor: int) -> Call:
        call = Call(actor, None)
        self.calls.append(call)
        return call

    def wait(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        oldest = next(call for call in self.calls if call in refs)
        self.calls.remove(oldest)
        return [oldest]

    def get(self, call: Call) -> Any:
        if call.actor == 0 and self.crashed:
            if call.key is not None:
                raise WorkerRestarting("The actor is temporarily unavailable: connection reset")
            if self.restarting:
                self.restarting -= 1
                raise WorkerRestarting("The actor is temporarily unavailable: The actor is restarting.")
            if self.gone:
                raise WorkerLost("The actor died because all references to it were removed.")
            self.crashed = False
            return "up"
        return "up" if call.key is None else JobOutcome(call.key, facts={"actor": call.actor})

    def stop(self, actor: int) -> None:
        self.stopped.append(actor)


def requests(keys: list[str]) -> list[JobRequest]:
    return [JobRequest(key, GenerationParams.create(prompt=f"1girl, {key}")) for key in keys]


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_executor, "RESTART_POLL_S", 0.0)


def test_an_actor_still_restarting_when_pinged_gets_work_again_once_up() -> None:
    cluster = RestartingCluster(restarting=3)
    dispatcher = Dispatcher(cluster, 2, depth=1)
    outcomes = list(dispatcher.outcomes(requests(["crash", "b", *(f"j{i}" for i in range(8))])))
    assert sorted(o.key for o in outcomes) == sorted(["crash", "b", *(f"j{i}" for i in range(8))])
    assert all(o.ok for o in outcomes)
    crash = next(o for o in outcomes if o.key == "crash")
    assert crash.attempts == 2 and crash.facts["actor"] == 1 and crash.retried.startswith("worker 0 died")
    assert cluster.restarting == 0 and cluster.stopped == [] and dispatcher.slots[0].alive
    assert any(actor == 0 for actor, _ in cluster.sent[cluster.sent.index((1, "crash")):])  # back at work


def test_an_actor_that_never_comes_back_is_dropped() -> None:
    cluster = RestartingCluster(restarting=2, gone=True)
    dispatcher = Dispatcher(cluster, 2, depth=1)
    outcomes = list(dispatcher.outcomes(requests(["crash", "b", "c", "d"])))
    assert all(o.ok for o in outcomes) and len(outcomes) == 4
    assert cluster.stopped == [0] and not dispatcher.slots[0].alive


def test_one_restarting_for_too_long_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_executor, "RESTART_PINGS", 5)
    cluster = RestartingCluster(restarting=100)
    dispatcher = Dispatcher(cluster, 2, depth=1)
    assert all(o.ok for o in dispatcher.outcomes(requests(["crash", *(f"j{i}" for i in range(20))])))
    assert cluster.stopped == [0] and cluster.restarting == 95 and not dispatcher.slots[0].alive


def test_the_other_actors_results_are_not_held_back_while_one_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher asks a restarting actor again when its re-ping is due, and meanwhile takes
    the other actor's results as they come: it never sleeps while something else can end."""
    monkeypatch.setattr(ray_executor, "RESTART_POLL_S", 0.2)
    slept: list[float] = []
    monkeypatch.setattr(ray_executor.time, "sleep", slept.append)
    waits: list[float | None] = []
    cluster = RestartingCluster(restarting=10**6)  # still restarting when the batch is done
    real_wait = cluster.wait
    monkeypatch.setattr(cluster, "wait", lambda refs, timeout=None: waits.append(timeout) or real_wait(refs))
    keys = ["crash", *(f"j{i}" for i in range(30))]
    outcomes = list(Dispatcher(cluster, 2, depth=1).outcomes(requests(keys)))
    assert sorted(o.key for o in outcomes) == sorted(keys) and all(o.ok for o in outcomes)
    assert slept == []
    assert any(t is not None and 0 < t <= 0.2 for t in waits)  # bounded by the re-ping due next

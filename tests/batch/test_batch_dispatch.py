"""The Ray executor's dispatcher on a fake cluster: routing by model, retries when an actor dies,
the head's policy check. No Ray, no engine: the cluster answers in submit order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from emaki.errors import EmakiError
from emaki.jobs.ray_executor import CallFailed, Dispatcher, Slot, Task, WorkerLost
from emaki.jobs.rendered import JobOutcome, JobRequest
from emaki.params import GenerationParams


@dataclass(eq=False)
class Ref:
    actor: int
    request: JobRequest | None  # None: a ping


@dataclass
class FakeCluster:
    """Actors 0, 1, ...; a call ends when waited for, oldest first. An actor in `dead` fails its
    calls (in flight or new); one in `restarted` fails the calls in flight once, then is up again."""

    dead: set[int] = field(default_factory=set)
    restarted: set[int] = field(default_factory=set)
    kill_when: dict[str, int] = field(default_factory=dict)  # job key -> actor to kill when it is sent
    crash_on: set[str] = field(default_factory=set)  # job keys whose call raises
    started: int = 0
    sent: list[tuple[int, str]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    queue: list[Ref] = field(default_factory=list)

    def start(self) -> int:
        self.started += 1
        return self.started - 1

    def submit(self, actor: int, request: JobRequest) -> Ref:
        self.sent.append((actor, request.key))
        if request.key in self.kill_when:
            self.dead.add(self.kill_when[request.key])
        ref = Ref(actor, request)
        self.queue.append(ref)
        return ref

    def ping(self, actor: int) -> Ref:
        ref = Ref(actor, None)
        self.queue.append(ref)
        return ref

    def wait(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        oldest = next(ref for ref in self.queue if ref in refs)
        self.queue.remove(oldest)
        return [oldest]

    def get(self, ref: Ref) -> Any:
        if ref.actor in self.restarted and ref.request is not None:
            raise WorkerLost("The actor died unexpectedly before finishing this task.")
        if ref.actor in self.restarted:
            self.restarted.discard(ref.actor)
            return "up again"
        if ref.actor in self.dead:
            raise WorkerLost("The actor died unexpectedly before finishing this task.\nmore detail")
        if ref.request is None:
            return "up"
        if ref.request.key in self.crash_on:
            raise CallFailed("TypeError: a bug")
        return JobOutcome(ref.request.key, facts={"actor": ref.actor})

    def stop(self, actor: int) -> None:
        self.stopped.append(actor)


class PoisonedCluster(FakeCluster):
    def submit(self, actor: int, request: JobRequest) -> Ref:
        if request.key == "poison":
            self.dead.add(actor)
        return super().submit(actor, request)


def request(key: str, model: str | None = None, prompt: str = "1girl") -> JobRequest:
    return JobRequest(key, GenerationParams.create(prompt=prompt, model=model, seed=1))


def every_key_once(outcomes: list[JobOutcome], keys: list[str]) -> None:
    assert Counter(o.key for o in outcomes) == Counter(keys)


def test_routing_prefers_an_idle_actor_holding_the_model_else_the_least_busy():
    dispatcher = Dispatcher(FakeCluster(), workers=3)
    a, b, c = dispatcher.slots

    def set_slots(*states: tuple[str, int]) -> None:
        for slot, (model, busy) in zip(dispatcher.slots, states):
            slot.model, slot.in_flight = model, busy

    set_slots(("m1", 0), ("m2", 0), ("m3", 0))
    assert dispatcher.route(Task(request("k", "m2"))) is b  # idle and holds it
    set_slots(("m1", 0), ("m2", 1), ("m3", 1))
    assert dispatcher.route(Task(request("k", "m2"))) is a  # holds it but busy: the least busy wins
    set_slots(("m1", 1), ("m2", 1), ("m3", 1))
    assert dispatcher.route(Task(request("k", "m3"))) is c  # equally busy: the one holding it
    set_slots(("m1", 2), ("m2", 2), ("m3", 2))
    assert dispatcher.route(Task(request("k", "m3"))) is None  # no room anywhere
    set_slots(("m1", 0), ("m2", 1), ("m3", 1))
    assert dispatcher.route(Task(request("k", "m1"), attempt=2, avoid=0)) is b  # a retry avoids the actor it lost


def test_two_models_on_two_actors_load_each_model_once():
    cluster = FakeCluster()
    dispatcher = Dispatcher(cluster, workers=2, depth=1)
    keys = [f"k{i}" for i in range(8)]
    outcomes = list(dispatcher.outcomes([request(k, model="m1" if i % 2 else "m2") for i, k in enumerate(keys)]))
    every_key_once(outcomes, keys)
    by_actor: dict[int, set[str]] = {}
    for actor, key in cluster.sent:
        by_actor.setdefault(actor, set()).add("m1" if int(key[1:]) % 2 else "m2")
    assert sorted(map(sorted, by_actor.values())) == [["m1"], ["m2"]]


def test_a_killed_actors_jobs_are_retried_once_on_another_and_recorded():
    cluster = FakeCluster(kill_when={"k3": 0})  # actor 0 dies as the 4th job is sent
    keys = [f"k{i}" for i in range(10)]
    outcomes = list(Dispatcher(cluster, workers=2).outcomes([request(k) for k in keys]))
    every_key_once(outcomes, keys)
    assert all(o.ok for o in outcomes)
    retried = [o for o in outcomes if o.attempts == 2]
    assert retried and all(o.retried is not None and o.retried.startswith("worker 0 died: The actor died")
                           for o in retried)
    assert all(o.facts["actor"] == 1 for o in retried)
    assert cluster.stopped == [0]  # its ping failed: dropped from the pool
    killed_at = [key for _, key in cluster.sent].index("k3")
    assert {actor for actor, _ in cluster.sent[killed_at + 1:]} == {1}  # nothing more for the dead one


def test_a_job_whose_worker_dies_twice_fails_with_the_reason_and_nothing_is_lost():
    cluster = PoisonedCluster()  # the job "poison" kills each actor it is sent to
    keys = ["a", "poison", "b", "c"]
    dispatcher = Dispatcher(cluster, workers=2, depth=1)
    outcomes = list(dispatcher.outcomes([request(k) for k in keys]))
    every_key_once(outcomes, keys)
    poison = next(o for o in outcomes if o.key == "poison")
    assert not poison.ok and poison.attempts == 2 and "died twice" in (poison.error or "")
    assert "worker 0 died" in (poison.error or "") and "worker 1 died" in (poison.error or "")
    left = [o for o in outcomes if o.error and "no worker left" in o.error]
    assert {o.key for o in outcomes if o.ok} | {o.key for o in left} | {"poison"} == set(keys)


def test_an_actor_restarted_by_ray_gets_work_again():
    cluster = FakeCluster(restarted={0})  # its first calls fail (the crash), its ping succeeds
    keys = [f"k{i}" for i in range(6)]
    outcomes = list(Dispatcher(cluster, workers=2, depth=1).outcomes([request(k) for k in keys]))
    every_key_once(outcomes, keys)
    assert all(o.ok for o in outcomes)
    assert cluster.stopped == []
    assert any(o.facts["actor"] == 0 for o in outcomes)  # back in the pool


def test_a_call_that_raises_is_failed_without_a_retry():
    cluster = FakeCluster(crash_on={"bad"})
    outcomes = {o.key: o for o in Dispatcher(cluster, workers=2).outcomes([request("bad"), request("good")])}
    assert outcomes["bad"].error == "internal error on worker 0: TypeError: a bug"
    assert outcomes["bad"].attempts == 1 and outcomes["good"].ok
    assert [key for _, key in cluster.sent] == ["bad", "good"]


def test_the_head_judges_every_job_before_sending_it():
    cluster = FakeCluster()
    outcomes = {o.key: o for o in Dispatcher(cluster, workers=1).outcomes(
        [request("ok"), request("refused", prompt="loli, nude")])}
    assert outcomes["refused"].error_type == "PolicyViolation" and outcomes["refused"].attempts == 0
    assert [key for _, key in cluster.sent] == ["ok"]


def test_a_pool_needs_a_worker():
    with pytest.raises(EmakiError, match="workers: expected 1 or more"):
        Dispatcher(FakeCluster(), workers=0)


def test_slots_start_empty():
    assert Dispatcher(FakeCluster(), workers=2).slots == [Slot(0, 0), Slot(1, 1)]

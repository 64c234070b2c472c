"""`emaki batch` on a local Ray cluster started by the test: 2 single-thread actors, the demo model,
one actor killed mid-batch."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import ray
from batch_files import TINY, write_jsonl
from test_batch_local import hidden_leftovers, pngs, run_cli

from emaki.batch.run import LocalBatchExecutor, run_batch
from emaki.batch.spec import read_batch
from emaki.batch.summary import read_summary
from emaki.jobs.ray_executor import EngineActor, RayCluster, RayExecutor
from emaki.jobs.rendered import EngineSlot, JobOutcome, JobRequest
from emaki.workspace import workspace_from_environment

JOBS = 12


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Ray instance on this machine for the module; its workers' EMAKI_HOME (returned) is their own."""
    home = tmp_path_factory.mktemp("ray-worker-home")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"EMAKI_HOME": str(home), "OMP_NUM_THREADS": "1"}})
    try:
        yield home
    finally:
        ray.shutdown()


class KillingOne:
    """Passes the executor's outcomes on; after the third, kills the actor with the most jobs sent
    to it (one running, one waiting): its process ends as `ray.kill` ends it, mid-job."""

    def __init__(self, executor: RayExecutor) -> None:
        self.executor = executor
        self.killed: int | None = None

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        for count, outcome in enumerate(self.executor.outcomes(requests), start=1):
            if count == 3:
                busiest = max(self.executor.dispatcher.slots, key=lambda slot: slot.in_flight)
                self.killed = busiest.index
                ray.kill(busiest.actor)
            yield outcome

    def close(self) -> None:
        self.executor.close()


def test_a_killed_actor_mid_batch_loses_nothing_and_makes_nothing_twice(ray_cluster, tmp_path):
    items = read_batch(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"1girl, item {i}", **TINY} for i in range(JOBS)]))
    executor = RayExecutor(RayCluster(EngineActor, (1, "fp32"), threads=1), workers=2)
    try:
        # The worker judges the prompt again (a request that did not come through the head's check).
        refused: JobOutcome = ray.get(executor.actors[1].render.remote("k", {"prompt": "loli, nude"}), timeout=120)
        assert refused.error_type == "PolicyViolation" and not refused.images
        killing = KillingOne(executor)
        report = run_batch(items, tmp_path / "ray", killing)
    finally:
        executor.close()

    rows = read_summary(tmp_path / "ray")
    assert [r["status"] for r in rows] == ["done"] * JOBS
    retried = [r for r in rows if r["attempts"] == "2"]
    assert retried and all(r["error"].startswith(f"retried: worker {killing.killed} died") for r in retried)
    assert {r["attempts"] for r in rows} <= {"1", "2"}
    made = pngs(tmp_path / "ray")
    assert sorted(made) == sorted(f"{item.key}.png" for item in items)  # each image once, no other file
    assert hidden_leftovers(tmp_path / "ray") == []
    assert report.counts["done"] == JOBS

    # The same images as this process makes them: the seeds travel, the head writes the workers' bytes.
    local = LocalBatchExecutor(EngineSlot.on_workspace(workspace_from_environment(os.environ), threads=1, precision="fp32"))
    run_batch(items[:3], tmp_path / "local", local)
    assert pngs(tmp_path / "local") == {name: made[name] for name in pngs(tmp_path / "local")}


def test_emaki_batch_with_the_ray_executor(ray_cluster, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"1boy, item {i}", **TINY} for i in range(3)])
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(capsys, str(prompts), "--out", str(out), "--executor", "ray", "--workers", "2")
    assert code == 0, stderr
    assert "3 done" in stdout
    assert [r["status"] for r in read_summary(out)] == ["done"] * 3
    assert ray.is_initialized()  # a cluster the command did not start is left running


def test_more_workers_than_the_cluster_has_room_for_is_an_error_not_a_hang(ray_cluster, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "1boy", **TINY}])
    code, _, stderr = run_cli(capsys, str(prompts), "--out", str(tmp_path / "run"), "--executor", "ray",
                              "--workers", "3")
    assert code == 2
    assert "--workers 3: the Ray cluster has 2 CPUs, room for 2 workers of 1 threads" in stderr
    assert ray.is_initialized()

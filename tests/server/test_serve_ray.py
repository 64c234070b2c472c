"""`emaki serve --executor ray` in-process (FastAPI's TestClient) on a local Ray cluster the module
starts: 2 single-thread actors, the demo model, 64×64. The test that kills an actor runs last
(the module's later tests would have one actor left)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.engine.run import Cancel
from emaki.jobs import ray_serve
from emaki.jobs.ray_executor import Slot
from emaki.jobs.ray_serve import ActorPool, RayServeExecutor
from emaki.server import ServerSettings, create_app
from emaki.workspace import workspace_from_environment

TINY = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
LONG = {"width": 64, "height": 64, "steps": 100, "sampler_name": "Euler"}  # long enough to be caught mid-job


@pytest.fixture(scope="module")
def head_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-serve-head")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, head_home: Path) -> Iterator[TestClient]:
    """One Ray instance and one server on it for the module; the actors' EMAKI_HOME is their own."""
    worker_home = tmp_path_factory.mktemp("ray-serve-worker")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"EMAKI_HOME": str(worker_home), "OMP_NUM_THREADS": "1"}})
    try:
        workspace = workspace_from_environment({"EMAKI_HOME": str(head_home)})
        settings = ServerSettings(workspace=workspace, precision="fp32", threads=1, executor="ray", workers=2)
        with TestClient(create_app(settings)) as client:
            yield client
    finally:
        ray.shutdown()


def executor_of(client: TestClient) -> RayServeExecutor:
    executor = client.app.state.service.worker.executor  # type: ignore[attr-defined]
    assert isinstance(executor, RayServeExecutor)
    return executor


def store_of(client: TestClient) -> Any:
    return client.app.state.service.store  # type: ignore[attr-defined]


def submit(client: TestClient, **fields: Any) -> str:
    response = client.post("/api/jobs", json=fields)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def first_progress(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job's first progress event with a step taken (polling, as a browser does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.get(f"/api/jobs/{job_id}/progress").json()
        if event and event["step"] >= 1:
            return event
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} showed no progress: {client.get(f'/api/jobs/{job_id}').json()}")


def hidden_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob(".*") if path.is_file()]


def test_a1111_txt2img_runs_on_an_actor_and_the_head_writes_the_image(served: TestClient, head_home: Path) -> None:
    body = served.post("/sdapi/v1/txt2img", json={"prompt": "1girl, red hair", "seed": 7, "save_images": True,
                                                  **TINY}).json()
    info = json.loads(body["info"])
    assert info["all_seeds"] == [7] and info["sd_model_name"] == "emaki-demo", body
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.size == (64, 64) and image.info["parameters"] == info["infotexts"][0]
    gallery = store_of(served).gallery()
    assert len(gallery) == 1 and Path(gallery[0]["path"]).is_relative_to(head_home / "outputs")
    assert Path(gallery[0]["path"]).read_bytes() == base64.b64decode(body["images"][0])  # the actor's bytes
    # Made on a worker: the head's engine never loaded a model.
    assert not served.app.state.service.engine.models._items  # type: ignore[attr-defined]
    assert {slot.model for slot in executor_of(served).pool.slots} != {None}


def test_progress_and_previews_stream_back_and_cancel_reaches_the_actor(served: TestClient) -> None:
    first = submit(served, prompt="1girl, long job", seed=3, **LONG)
    second = submit(served, prompt="1girl, another long job", seed=4, save=False, **LONG)
    event = first_progress(served, first)
    assert event["steps"] == LONG["steps"] and event["preview"].startswith("data:image/png;base64,")
    worker = served.app.state.service.worker  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while worker.progress(second).step < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Both at once, one on each actor, each with its own progress.
    assert worker.progress(first).job_id == first and worker.progress(second).job_id == second
    assert worker.progress(second).step >= 1 and worker.progress(second).preview_base64()

    assert served.post(f"/api/jobs/{first}/cancel").status_code == 200
    assert wait_job(served, first, timeout=60)["status"] == "interrupted"
    assert served.get(f"/api/jobs/{second}").json()["status"] == "running"  # only the one asked for
    assert served.post("/sdapi/v1/interrupt").status_code == 200  # A1111's interrupt reaches the actor too
    assert wait_job(served, second, timeout=60)["status"] == "interrupted"


def test_the_policy_refuses_on_the_head_before_dispatch(served: TestClient) -> None:
    response = served.post("/api/jobs", json={"prompt": "loli, nude", **TINY})
    assert response.status_code == 400 and response.json()["error"] == "PolicyViolation"


def test_img2img_sends_its_image_to_the_actor(served: TestClient, head_home: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 160, 90)).save(buffer, format="PNG")
    body = served.post("/sdapi/v1/img2img", json={"prompt": "1girl", "seed": 5, "denoising_strength": 0.5,
                                                  "init_images": [base64.b64encode(buffer.getvalue()).decode()],
                                                  **TINY})
    assert body.status_code == 200, body.text
    info = json.loads(body.json()["info"])
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    assert not any((head_home / "inputs").iterdir())  # the head's upload went when the job ended


def test_grid_jobs_stay_on_the_head(served: TestClient) -> None:
    response = served.post("/api/grid", json={"params": {"prompt": "1girl", **TINY},
                                              "x": {"axis": "CFG Scale", "values": "5, 7"}})
    assert response.status_code == 202, response.text
    job = wait_job(served, response.json()["id"], timeout=120)
    assert job["status"] == "done" and job["result"]["cells_done"] == 2, job
    assert served.app.state.service.engine.models._items  # type: ignore[attr-defined]  (the head's engine ran it)


class Restarting(Exception):
    pass


class FakeCluster:
    """What `ActorPool` asks of Ray, with pings answered from `answers` ("restarting", "up", "gone")."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.stopped: list[int] = []
        self.started = 0
        self.ray = SimpleNamespace(get=self.get, exceptions=SimpleNamespace(ActorUnavailableError=Restarting))

    def start(self) -> int:
        self.started += 1
        return self.started

    def ping(self, actor: int) -> int:
        return actor

    def get(self, ref: int, timeout: float | None = None) -> str:
        answer = self.answers.pop(0)
        if answer == "restarting":
            raise Restarting("the actor is restarting")
        if answer == "gone":
            raise RuntimeError("the actor died")
        return answer

    def stop(self, actor: int) -> None:
        self.stopped.append(actor)


def lost_and_probed(pool: ActorPool) -> Slot:
    slot = pool.take("demo", Cancel())
    pool.lost(slot)
    deadline = time.monotonic() + 10
    while slot.in_flight and time.monotonic() < deadline:  # lent to nothing until the pings end
        time.sleep(0.01)
    assert slot.in_flight == 0
    return slot


def test_a_restarting_actor_is_asked_again_and_kept_and_a_dead_one_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray: a killed process answers "restarting" at once until Ray has started it again."""
    monkeypatch.setattr(ray_serve, "RESTART_POLL_S", 0.0)
    cluster = FakeCluster(["restarting", "restarting", "up"])
    pool = ActorPool(cluster, 2)  # type: ignore[arg-type]
    pool.slots[0].model = "demo"
    restarted = lost_and_probed(pool)
    assert restarted.alive and restarted.model is None and cluster.stopped == [] and cluster.answers == []
    cluster.answers = ["restarting", "gone"]
    dropped = lost_and_probed(pool)
    assert not dropped.alive and cluster.stopped == [dropped.actor]


@pytest.mark.slow  # Ray's restart of the process takes 10-60 s on a busy 2-core machine
def test_an_actor_whose_process_dies_is_retried_elsewhere_and_kept_once_ray_restarts_it(served: TestClient) -> None:
    """A crash (the process SIGKILLed, as the OOM killer does; `ray.kill` below ends an actor for
    good): Ray restarts the actor, which first answers "restarting"; the pool keeps it."""
    job_id = submit(served, prompt="1boy, crashed", seed=97, **LONG)
    first_progress(served, job_id)
    pool = executor_of(served).pool
    running = {slot.index: ray.get(slot.actor.running.remote(), timeout=30) for slot in pool.slots}
    victim = next(slot for slot in pool.slots if (running[slot.index] or {}).get("key"))
    os.kill(ray.get(victim.actor.__ray_call__.remote(lambda actor: os.getpid()), timeout=30), signal.SIGKILL)

    job = wait_job(served, job_id, timeout=120)
    assert job["status"] == "done" and job["note"].startswith(f"retried: worker {victim.index} died"), job
    assert len(job["images"]) == 1
    deadline = time.monotonic() + ray_serve.PING_S
    while victim.in_flight and time.monotonic() < deadline:  # lent to nothing until it answers again
        time.sleep(0.1)
    assert victim.in_flight == 0 and all(slot.alive for slot in pool.slots)
    assert victim.model is None  # a new process: its engine holds no model


def test_an_actor_killed_mid_job_costs_one_retry_and_nothing_twice(served: TestClient, head_home: Path) -> None:
    jobs = [submit(served, prompt=f"1boy, item {i}", seed=100 + i, **TINY) for i in range(4)]
    victim_job = submit(served, prompt="1boy, the long one", seed=99, **LONG)
    jobs.append(victim_job)
    first_progress(served, victim_job)
    pool = executor_of(served).pool
    running = {slot.index: ray.get(slot.actor.running.remote(), timeout=30) for slot in pool.slots}
    victim = next(slot for slot in pool.slots if (running[slot.index] or {}).get("steps") == LONG["steps"])
    ray.kill(victim.actor)  # mid-job: the long one is at step 1 or more of 100

    ended = [wait_job(served, job_id, timeout=120) for job_id in jobs]
    assert [job["status"] for job in ended] == ["done"] * len(jobs), ended
    retried = [job for job in ended if job["note"]]
    assert [job["id"] for job in retried] == [victim_job] and retried[0]["note"].startswith(f"retried: worker {victim.index} died"), ended
    rows = store_of(served).gallery(limit=100)
    mine = [row for row in rows if row["job_id"] in jobs]
    assert sorted(row["job_id"] for row in mine) == sorted(jobs)  # one image per job, none twice
    assert len({row["path"] for row in rows}) == len(rows)
    assert hidden_files(head_home / "outputs") == []  # no half-written file
    assert sum(slot.alive for slot in pool.slots) == 1


def test_a_job_whose_last_actor_dies_fails_with_the_reason(served: TestClient) -> None:
    """Runs after the test above (one actor left): its job cannot be retried anywhere."""
    pool = executor_of(served).pool
    (last,) = [slot for slot in pool.slots if slot.alive]
    job_id = submit(served, prompt="1boy, the last one", seed=98, **LONG)
    first_progress(served, job_id)
    ray.kill(last.actor)
    job = wait_job(served, job_id, timeout=120)
    assert job["status"] == "failed" and job["error"].startswith("no worker left: every actor of the pool died"), job
    assert job["note"].startswith(f"retried: worker {last.index} died"), job
    response = served.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **TINY})
    assert response.status_code == 503 and "no worker left" in response.text  # said, not hung

"""A generation job stopped by the server's stop goes back in the queue and runs again at the next
start, unless it had saved images (then it ends `interrupted` with them: run again, they would be
made twice); a user's interrupt still ends it `interrupted`. The worker runs on a stand-in
executor here; one test stops a real `emaki serve` with SIGTERM and starts it again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.engine.run import Cancel, GeneratedImage
from emaki.errors import Interrupted
from emaki.jobs.executor import RemoteModel, RemoteResult
from emaki.jobs.store import Job, JobStore
from emaki.jobs.worker import RERUN_NOTE, STOPPED_SAVED_NOTE, Worker
from emaki.params import GenerationParams
from emaki.server import ServerSettings, create_app

HANG_GUARD = 30.0  # seconds: no test waits this long unless something is broken
PARAMS = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "seed": 7, "n_iter": 3}
# ~0.1 s a step on one core: still sampling when the stop (sent at its first step) comes.
SAMPLING = {"prompt": "1girl", "steps": 30, "batch_size": 2, "width": 64, "height": 64, "seed": 3}
JOBS = {  # each kind the worker runs on the executor, but training: (kind, params)
    "generate": ("generate", PARAMS),
    "grid": ("grid", {"params": PARAMS, "spec": {}}),
    "sd-upscale": ("sd-upscale", PARAMS | {"sd_upscale": {"upscaler": "None", "scale": 2.0, "overlap": 8}}),
}


class Held:
    """A stand-in executor: each run saves `saved` images, then waits for its interrupt and
    raises `Interrupted` with them (as the engine does); `finish` set: it ends `done` at once."""

    slots = 1

    def __init__(self, out: Path, saved: int = 0, finish: bool = False) -> None:
        self.out, self.saved, self.finish = out, saved, finish
        self.runs: list[GenerationParams] = []
        self.started = threading.Event()
        self.go_on = threading.Event()  # cleared: an interrupted run waits for it before it ends
        self.go_on.set()

    def _image(self, params: GenerationParams, index: int) -> GeneratedImage:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"{len(list(self.out.iterdir())):05d}-{params.seed + index}.png"
        picture = Image.new("RGB", (8, 8))
        picture.save(path)
        return GeneratedImage(picture, params.seed + index, 0, f"{params.prompt}\nSeed: {params.seed + index}", path)

    def run(self, params: GenerationParams, *, progress: Any, cancel: Cancel, save: bool) -> RemoteResult:
        self.runs.append(params)
        if self.finish:
            return RemoteResult(params, RemoteModel("demo"), [self._image(params, i) for i in range(params.n_iter)])
        made = [self._image(params, i) for i in range(self.saved)]
        self.started.set()
        assert cancel.interrupt.wait(HANG_GUARD), "the run was never interrupted"
        assert self.go_on.wait(HANG_GUARD)
        error = Interrupted("interrupted")
        error.result = RemoteResult(params, RemoteModel("demo"), made)  # type: ignore[attr-defined]
        raise error

    def grid(self, params: GenerationParams, spec: Any, *, progress: Any, cancel: Cancel, save: bool) -> Any:
        assert not self.saved and not self.finish, "this stand-in makes no grid pictures"
        try:
            return self.run(params, progress=None, cancel=cancel, save=save)
        except Interrupted:  # before a cell was made: no partial grid goes with it
            raise Interrupted("interrupted") from None

    def sd_upscale(self, params: GenerationParams, **options: Any) -> RemoteResult:
        return self.run(params, progress=None, cancel=options["cancel"], save=options["save"])


def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def job_now(store: JobStore, job: Job) -> Job:
    found = store.get(job.id)
    assert found is not None
    return found


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = JobStore(tmp_path / "jobs.db")
    yield opened
    opened.close()


@pytest.mark.parametrize("kind", JOBS)
def test_a_job_stopped_by_the_server_stop_goes_back_in_the_queue_and_runs_again(
        kind: str, store: JobStore, tmp_path: Path) -> None:
    job_kind, params = JOBS[kind]
    job = store.submit(params, kind=job_kind)
    stopped = Held(tmp_path / "out")
    worker = Worker(store, stopped)  # type: ignore[arg-type]  (a stand-in executor)
    worker.start()
    assert stopped.started.wait(HANG_GUARD)
    worker.stop()
    queued = job_now(store, job)
    assert (queued.status, queued.note, queued.error) == ("queued", RERUN_NOTE, None)
    assert store.images_of(job.id) == [] and worker.progress().job_id is None

    if kind != "generate":  # the rerun of the others is the generation's path
        return
    again = Worker(store, Held(tmp_path / "out", finish=True))  # type: ignore[arg-type]
    again.start()
    try:
        until(lambda: job_now(store, job).status == "done", "the requeued job did not run again")
    finally:
        again.stop()
    assert len(store.images_of(job.id)) == 3 and len(store.gallery()) == 3  # its images, once


def test_a_job_that_saved_images_before_the_stop_ends_interrupted_with_them(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(PARAMS)
    stopped = Held(tmp_path / "out", saved=2)  # two of its three batches were written
    worker = Worker(store, stopped)  # type: ignore[arg-type]
    worker.start()
    assert stopped.started.wait(HANG_GUARD)
    worker.stop()
    ended = job_now(store, job)
    assert (ended.status, ended.error, ended.note) == ("interrupted", "interrupted", STOPPED_SAVED_NOTE)
    assert [row["seed"] for row in store.images_of(job.id)] == [7, 8]
    assert store.claim_next(timeout=0) is None  # not run again: its images would be made twice


def test_a_user_interrupt_still_ends_the_job_interrupted(store: JobStore, tmp_path: Path) -> None:
    first, second = store.submit(PARAMS), store.submit(PARAMS)
    held = Held(tmp_path / "out")
    worker = Worker(store, held)  # type: ignore[arg-type]
    worker.start()
    try:
        assert held.started.wait(HANG_GUARD)
        held.started.clear()
        assert worker.interrupt_job(first.id)
        until(lambda: job_now(store, first).status == "interrupted", "the interrupted job did not end")
        # Interrupted by its user, then the server stops before the run has ended: still the user's.
        assert held.started.wait(HANG_GUARD)
        held.go_on.clear()
        assert worker.interrupt_job(second.id)
        worker.stop(timeout=0)
        held.go_on.set()
    finally:
        worker.stop()
    assert job_now(store, first).note is None
    assert (job_now(store, second).status, job_now(store, second).note) == ("interrupted", None)


def test_a_client_only_job_stopped_still_ends_interrupted_for_its_waiting_request(
        store: JobStore, tmp_path: Path) -> None:
    job = store.submit(PARAMS, keep=False)  # an A1111 request waits for it; nobody would after a restart
    held = Held(tmp_path / "out")
    worker = Worker(store, held)  # type: ignore[arg-type]
    worker.start()
    assert held.started.wait(HANG_GUARD)
    worker.stop()
    assert job_now(store, job).status == "interrupted"


def test_a_job_taken_as_the_server_stops_is_put_back_without_running(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(PARAMS)
    held = Held(tmp_path / "out", finish=True)
    worker = Worker(store, held)  # type: ignore[arg-type]
    worker.stop(timeout=0)  # the stop comes between a lane's claim and its run
    claimed = store.claim_next(timeout=0)
    assert claimed is not None and claimed.attempts == 1
    worker.run_job(claimed)
    back = job_now(store, job)
    assert (back.status, back.attempts, back.note) == ("queued", 0, None) and held.runs == []


def test_a_requeued_job_is_not_taken_by_another_lane_as_the_server_stops(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(PARAMS)
    held = Held(tmp_path / "out")
    held.slots = 2  # as a Ray executor with two actors: the second lane waits for a job
    worker = Worker(store, held)  # type: ignore[arg-type]
    worker.start()
    assert held.started.wait(HANG_GUARD)
    worker.stop()
    assert job_now(store, job).status == "queued" and len(held.runs) == 1


def test_the_server_stop_puts_the_running_job_back_and_the_next_start_makes_exactly_its_images() -> None:
    # The app's stop (leaving the client) is what SIGTERM and Ctrl+C run (`begin_shutdown`);
    # `test_server_shutdown.py` sends SIGTERM to a real process, and the slow test below restarts one.
    home = Path(os.environ["EMAKI_HOME"])
    with TestClient(create_app(ServerSettings())) as first:
        job_id = first.post("/api/jobs", json=SAMPLING | {"steps": 12}).json()["id"]  # stopped within a step
        until(lambda: (first.get(f"/api/jobs/{job_id}/progress").json() or {}).get("step"), "the job did not start")
    store = JobStore(home / "server.db")
    try:
        stopped = store.get(job_id)
        assert stopped is not None and (stopped.status, stopped.note) == ("queued", RERUN_NOTE), stopped
        assert store.images_of(job_id) == [] and not list(home.rglob("*.png"))  # nothing was saved
    finally:
        store.close()

    with TestClient(create_app(ServerSettings())) as second:
        job = wait_job(second, job_id, timeout=120)  # a hang guard: a busy machine samples slowly
        assert job["status"] == "done" and job["attempts"] == 2, job
        assert [image["seed"] for image in job["images"]] == [3, 4]
        assert len(second.get("/api/gallery").json()) == 2
    store = JobStore(home / "server.db")
    try:  # its two files, each once, and nothing else written
        assert sorted(row["path"] for row in store.images_of(job_id)) == sorted(map(str, home.rglob("*.png")))
    finally:
        store.close()


@pytest.mark.slow  # two starts of a real server: over a minute on a busy 2-core machine
def test_sigterm_puts_the_running_job_back_and_the_next_start_makes_exactly_its_images(live_server: Any) -> None:
    base = live_server.url
    job_id = httpx.post(base + "/api/jobs", json=SAMPLING).json()["id"]
    until(lambda: (httpx.get(f"{base}/api/jobs/{job_id}/progress").json() or {}).get("step"), "the job did not start")
    live_server.process.send_signal(signal.SIGTERM)
    try:
        assert live_server.process.wait(HANG_GUARD) in (0, -signal.SIGTERM), live_server.log()
    except subprocess.TimeoutExpired:
        live_server.stop(kill=True)
        raise AssertionError(f"SIGTERM did not stop the server: {live_server.log()}") from None

    store = JobStore(live_server.home / "server.db")
    try:
        stopped = store.get(job_id)
        assert stopped is not None and (stopped.status, stopped.note) == ("queued", RERUN_NOTE), stopped
        assert store.images_of(job_id) == []
    finally:
        store.close()
    outputs = live_server.home / "outputs"
    assert not outputs.exists() or not list(outputs.rglob("*.png"))  # nothing was saved

    live_server.start()
    deadline = time.monotonic() + 120  # a hang guard: a busy machine runs the 30 steps slowly
    while (job := httpx.get(f"{base}/api/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "done" and job["attempts"] == 2, job
    images = job["images"]
    assert [image["seed"] for image in images] == [3, 4]
    assert len(httpx.get(base + "/api/gallery").json()) == 2
    live_server.stop()
    assert "Traceback" not in live_server.log()
    store = JobStore(live_server.home / "server.db")
    try:  # its two files, each once, and nothing else written
        assert sorted(row["path"] for row in store.images_of(job_id)) == sorted(map(str, outputs.rglob("*.png")))
    finally:
        store.close()

"""A full disk (issue 16, item 11): the job whose images or end cannot be written fails with the
reason, the worker goes on, `/api/health` reports the fault, an A1111 request waiting on the job
gets a 507 instead of hanging, and a submission that cannot be stored is a 507.

SQLite's full-disk error is raised by a stand-in for the store's connection, at the statements a
real full disk would refuse; the PNG and upload writes fail with ENOSPC."""

from __future__ import annotations

import base64
import errno
import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emaki.jobs.store import JobStore
from emaki.server import ServerSettings, create_app

FAST = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "seed": 1}
HANG_GUARD = 60  # seconds: far more than any of these requests takes; a hang fails instead of blocking


class FullDatabase:
    """The store's connection, with the statements starting with `refused` failing as SQLite
    fails them on a full disk (while `full` is set)."""

    def __init__(self, db: sqlite3.Connection, *refused: str) -> None:
        self.db = db
        self.refused = refused
        self.full = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.full and sql.lstrip().startswith(self.refused):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@contextmanager
def full_database(store: JobStore, *refused: str) -> Iterator[FullDatabase]:
    real = store._db
    full = FullDatabase(real, *refused)
    store._db = full  # type: ignore[assignment]
    try:
        yield full
    finally:
        store._db = real


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def store_of(client: TestClient) -> JobStore:
    return client.app.state.service.store  # type: ignore[attr-defined]


def within_guard(call: Callable[[], httpx.Response]) -> httpx.Response:
    """`call()`, failing the test (instead of hanging it) if it does not answer in time."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=HANG_GUARD)
    finally:
        pool.shutdown(wait=False)


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ended(client: TestClient, job_id: str) -> dict:
    def check() -> dict | None:
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_until(check, f"job {job_id} to end")


def healthy(client: TestClient) -> bool:
    return client.get("/api/health").status_code == 200


def test_gallery_rows_refused_the_job_fails_with_the_reason_and_the_worker_goes_on(client: TestClient) -> None:
    store = store_of(client)
    with full_database(store, "INSERT INTO images"):
        job = ended(client, client.post("/api/jobs", json=FAST).json()["id"])
        assert job["status"] == "failed"
        assert "database or disk is full" in job["error"] and "recorded" in job["error"]
        health = client.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert any("database or disk is full" in fault for fault in health.json()["faults"])
    assert client.get("/api/gallery").json() == []  # no row was half-written
    after = ended(client, client.post("/api/jobs", json=FAST | {"seed": 2}).json()["id"])
    assert after["status"] == "done" and len(after["images"]) == 1
    assert client.get("/api/health").json() == {"ok": True, "status": "ok", "faults": [],
                                                "queue": {"done": 1, "failed": 1}}


def test_a_store_that_cannot_write_at_all_keeps_the_failure_and_a1111_gets_507(client: TestClient) -> None:
    store = store_of(client)
    # Every end of a job is refused (the first try and the smaller retry); taking jobs still works.
    with full_database(store, "UPDATE jobs SET status = ?", "INSERT INTO images") as full:
        answer = within_guard(lambda: client.post("/sdapi/v1/txt2img", json=FAST | {"save_images": True}))
        assert answer.status_code == 507, answer.text
        assert "database or disk is full" in answer.json()["detail"]
        [job] = client.get("/api/jobs").json()
        assert job["status"] == "failed" and "could not be recorded" in job["error"]  # held in memory
        health = client.get("/api/health")
        assert health.status_code == 503 and any(job["id"] in fault for fault in health.json()["faults"])
        assert health.json()["queue"] == {"failed": 1}
        full.full = False
        # Freed: the worker writes the held end when it next takes a job, and goes on.
        done = ended(client, client.post("/api/jobs", json=FAST | {"seed": 2}).json()["id"])
    assert done["status"] == "done"
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT status FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("failed",)
    assert healthy(client)


def test_a_refused_commit_is_rolled_back_and_the_store_works_after(client: TestClient) -> None:
    """SQLite may refuse at the commit (and may or may not roll back itself)."""
    store = store_of(client)
    with full_database(store, "COMMIT") as full:
        refused = client.post("/api/jobs", json=FAST)
        assert refused.status_code == 507 and "no space left" in refused.json()["detail"]
        assert wait_until(lambda: not healthy(client), "health to report the fault")
        full.full = False
    job = ended(client, client.post("/api/jobs", json=FAST).json()["id"])
    assert job["status"] == "done" and healthy(client)
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]


def test_a_full_disk_at_submission_is_507_and_queues_nothing(client: TestClient) -> None:
    store = store_of(client)
    with full_database(store, "INSERT INTO jobs"):
        for path in ("/api/jobs", "/sdapi/v1/txt2img"):
            answer = within_guard(lambda path=path: client.post(path, json=FAST))
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"] == "StorageFull"
            assert "could not queue the job" in answer.json()["detail"]
        health = client.get("/api/health")
        assert health.status_code == 503 and "could not queue the job" in health.json()["faults"][0]
    assert client.get("/api/jobs").json() == []


def test_a_queue_that_cannot_be_taken_from_waits_and_the_worker_lives(client: TestClient) -> None:
    store = store_of(client)
    with full_database(store, "UPDATE jobs SET status = 'running'") as full:
        job_id = client.post("/api/jobs", json=FAST).json()["id"]
        faults = wait_until(lambda: client.get("/api/health").json()["faults"], "health to report the fault")
        assert "could not take the next job" in faults[0]
        assert client.get(f"/api/jobs/{job_id}").json()["status"] == "queued"
        full.full = False
    assert ended(client, job_id)["status"] == "done"


def test_no_space_for_the_png_is_a_failed_job_a_507_and_a_fault(client: TestClient,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("emaki.engine.stages.save_png", no_space)
    answer = within_guard(lambda: client.post("/sdapi/v1/txt2img", json=FAST | {"save_images": True}))
    assert answer.status_code == 507 and "No space left on device" in answer.json()["detail"]
    job = ended(client, client.post("/api/jobs", json=FAST).json()["id"])
    assert job["status"] == "failed" and "No space left on device" in job["error"]
    health = client.get("/api/health")
    assert health.status_code == 503 and "No space left on device" in health.json()["faults"][0]
    # An image not kept on disk is unaffected; once one is written again, the fault clears.
    assert client.post("/sdapi/v1/txt2img", json=FAST).status_code == 200
    monkeypatch.undo()
    assert ended(client, client.post("/api/jobs", json=FAST).json()["id"])["status"] == "done"
    assert healthy(client)


def test_no_space_for_an_upload_or_the_settings_is_507(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def no_space(path: Any) -> Iterator[Any]:
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr("emaki.server.service.atomic_write", no_space)
    monkeypatch.setattr("emaki.server.options.atomic_write", no_space)
    image = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 160)).save(image, format="PNG")

    upload = client.post("/sdapi/v1/img2img", json=FAST | {"init_images": [base64.b64encode(image.getvalue()).decode()]})
    assert upload.status_code == 507 and "uploaded image" in upload.json()["detail"]
    settings = client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 31337})
    assert settings.status_code == 507 and "settings" in settings.json()["detail"]
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 0  # unchanged: not saved
    assert client.get("/api/jobs").json() == []

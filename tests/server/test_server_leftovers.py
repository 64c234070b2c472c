"""What jobs and streams leave behind (issue 16, item 15): img2img uploads are deleted once their
job ends, images no route can return are not held, and idle event streams wait for a change
instead of querying the database."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from emaki.jobs.store import FINISHED, JobStore
from emaki.server import ServerSettings, create_app
from emaki.server.api import all_events, job_events
from emaki.workspace import Workspace

FAST = {"steps": 2, "width": 64, "height": 64, "seed": 3}


def png_base64(size: tuple[int, int] = (64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 160)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def make_app(home: Path, **settings: Any) -> FastAPI:
    return create_app(ServerSettings(workspace=Workspace(home), **settings))


def uploads(home: Path) -> list[Path]:
    folder = home / "inputs"
    return sorted(folder.iterdir()) if folder.exists() else []


def wait_job(client: TestClient, job_id: str) -> dict[str, Any]:
    """The job as its event stream's last event shows it: sent once the job's end callbacks ran
    (a poll of `/api/jobs/{id}` may see the end committed a moment before they finish)."""
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name in FINISHED:
                return json.loads(line[6:])
    raise AssertionError(f"the event stream of job {job_id} ended without its end")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(make_app(home)) as test_client:
        yield test_client


# --- uploads ---


def test_a1111_img2img_upload_is_deleted_when_the_job_ends(client: TestClient, home: Path) -> None:
    reply = client.post("/sdapi/v1/img2img", json={"init_images": [png_base64()], "prompt": "1girl",
                                                   "denoising_strength": 0.5, **FAST})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["images"]) == 1  # save_images false: the worker's hold still reaches the client
    assert uploads(home) == []


def test_native_img2img_upload_is_deleted_when_the_job_ends(client: TestClient, home: Path) -> None:
    job = client.post("/api/jobs", json={"init_image": png_base64(), "prompt": "1girl", **FAST}).json()
    assert wait_job(client, job["id"])["status"] == "done"
    assert uploads(home) == []


def test_upload_of_a_cancelled_job_is_deleted(home: Path) -> None:
    with TestClient(make_app(home, run_worker=False)) as client:
        job = client.post("/api/jobs", json={"init_image": png_base64(), "prompt": "1girl", **FAST}).json()
        assert len(uploads(home)) == 1  # kept while the job waits: it may run after a restart
        assert client.post(f"/api/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert uploads(home) == []


def test_start_removes_uploads_no_queued_job_needs(home: Path) -> None:
    (home / "inputs").mkdir(parents=True)
    needed, stray = home / "inputs" / "needed.png", home / "inputs" / "stray.png"
    for path in (needed, stray):
        path.write_bytes(base64.b64decode(png_base64()))
    (home / "inputs" / ".stray.png.0123456789ab.partial").mkdir()  # a write a crash cut short
    store = JobStore(home / "server.db")
    store.submit({"prompt": "1girl", "init_image": str(needed)})
    store.close()
    with TestClient(make_app(home, run_worker=False)):
        assert uploads(home) == [needed]


# --- held images ---


def test_native_save_false_images_are_not_held(client: TestClient) -> None:
    job = client.post("/api/jobs", json={"prompt": "1girl", "save": False, **FAST}).json()
    ended = wait_job(client, job["id"])
    assert ended["status"] == "done" and ended["images"] == []
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.worker.take_held(job["id"]) is None  # no route returns them: not kept in memory


# --- event streams ---


class StoreCalls:
    """Counts calls to the store's public methods (each one a database query or write)."""

    def __init__(self, store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in dir(JobStore):
            if not name.startswith("_") and callable(getattr(JobStore, name)):
                monkeypatch.setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)
        return counted


def stream_request(app: FastAPI, path: str) -> Request:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    return Request({"type": "http", "app": app, "method": "GET", "path": path, "headers": [],
                    "query_string": b""}, receive)


async def events_of(body: AsyncIterator[str | bytes]) -> AsyncIterator[str]:
    """The event names a stream sends (comments such as keep-alives skipped)."""
    async for chunk in body:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        for line in text.splitlines():
            if line.startswith("event: "):
                yield line[7:]


async def next_event(events: AsyncIterator[str], timeout: float = 10) -> str:
    return await asyncio.wait_for(anext(events), timeout)  # type: ignore[arg-type]


def test_idle_event_streams_wait_without_querying_the_store(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(home, run_worker=False)
    store: JobStore = app.state.service.store

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            job = store.submit({"prompt": "1girl", **FAST})
            job_stream = events_of((await job_events(job.id, stream_request(app, "/events"))).body_iterator)
            all_stream = events_of((await all_events(stream_request(app, "/api/events"))).body_iterator)
            assert await next_event(job_stream) == "queued"
            assert await next_event(all_stream) == "queue"
            waiting = [asyncio.ensure_future(next_event(job_stream)), asyncio.ensure_future(next_event(all_stream))]
            await asyncio.sleep(0.3)  # both finish what they started and go idle
            calls = StoreCalls(store, monkeypatch)
            await asyncio.sleep(1.5)  # 7 rounds of the old 0.2 s polling
            assert calls.calls == [] and not any(task.done() for task in waiting)
            # ... and a change still reaches both at once
            store.cancel(job.id)
            assert await asyncio.wait_for(waiting[0], 10) == "cancelled"
            assert await asyncio.wait_for(waiting[1], 10) in ("queue", "finished")

    asyncio.run(scenario())


def test_all_events_reports_a_submission_while_idle(home: Path) -> None:
    app = make_app(home, run_worker=False)
    store: JobStore = app.state.service.store

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            stream = events_of((await all_events(stream_request(app, "/api/events"))).body_iterator)
            assert await next_event(stream) == "queue"
            pending = asyncio.ensure_future(next_event(stream))
            await asyncio.sleep(0.3)
            store.submit({"prompt": "1girl", **FAST})  # from any writer of the database
            assert await asyncio.wait_for(pending, 10) == "queue"

    asyncio.run(scenario())


def test_streams_and_waits_end_when_the_server_begins_to_stop(home: Path) -> None:
    from emaki.server.app import begin_shutdown

    app = make_app(home, run_worker=False)
    store: JobStore = app.state.service.store

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            job = store.submit({"prompt": "1girl", **FAST})
            job_stream = events_of((await job_events(job.id, stream_request(app, "/events"))).body_iterator)
            all_stream = events_of((await all_events(stream_request(app, "/api/events"))).body_iterator)
            assert await next_event(job_stream) == "queued"
            assert await next_event(all_stream) == "queue"
            waiting = asyncio.ensure_future(app.state.waiters.wait(job.id))  # an A1111 request
            await asyncio.sleep(0.3)
            begin_shutdown(app)
            for stream in (job_stream, all_stream):
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(anext(stream), 10)  # type: ignore[arg-type]
            with pytest.raises(HTTPException) as stopped:
                await asyncio.wait_for(waiting, 10)
            assert stopped.value.status_code == 503 and "stopping" in stopped.value.detail

    asyncio.run(scenario())

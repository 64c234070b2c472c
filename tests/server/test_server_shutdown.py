"""SIGTERM stops `emaki serve` (issue 16, item 13): a real server process with a running job, a
request waiting on a queued one and open event streams exits promptly, and the running job is
put back in the queue (it had saved nothing), not left `running`."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

import httpx

from emaki.jobs.store import JobStore
from emaki.jobs.worker import RERUN_NOTE

SLOW = {"prompt": "1girl", "steps": 1000, "n_iter": 20, "width": 64, "height": 64, "seed": 1}


def read_stream(url: str, seen: list[str]) -> None:
    """Collect an event stream's lines until the server ends it."""
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=120)) as response:
            seen.extend(response.iter_lines())
    except httpx.HTTPError as e:
        seen.append(f"error: {type(e).__name__}")


def test_sigterm_stops_the_server_with_streams_open_and_a_job_running(live_server: Any) -> None:
    base = live_server.url
    running = httpx.post(base + "/api/jobs", json=SLOW).json()["id"]
    deadline = time.monotonic() + 60
    while not (httpx.get(f"{base}/api/jobs/{running}/progress").json() or {}).get("step"):
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)

    streams: list[list[str]] = [[], []]
    readers = [threading.Thread(target=read_stream, args=(url, seen), daemon=True)
               for url, seen in zip([base + "/api/events", f"{base}/api/jobs/{running}/events"], streams, strict=True)]
    answer: list[Any] = []

    def a1111_request() -> None:  # its job waits in the queue behind the running one
        try:
            answer.append(httpx.post(base + "/sdapi/v1/txt2img", json=SLOW | {"steps": 2}, timeout=120))
        except httpx.HTTPError as e:
            answer.append(e)

    waiting = threading.Thread(target=a1111_request, daemon=True)
    for thread in [*readers, waiting]:
        thread.start()
    deadline = time.monotonic() + 30
    while not (all(streams) and httpx.get(base + "/api/health").json()["queue"].get("queued")):
        assert time.monotonic() < deadline, "the streams did not open or the request was not queued"
        time.sleep(0.05)

    process = live_server.process
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(30)  # a hang guard, not a speed target
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise AssertionError(f"SIGTERM did not stop the server within 30 s: {live_server.log()}") from None
    assert code in (0, -signal.SIGTERM), live_server.log()
    for thread in [*readers, waiting]:
        thread.join(10)
        assert not thread.is_alive()
    assert "Traceback" not in live_server.log()

    store = JobStore(live_server.home / "server.db")
    try:
        job = store.get(running)
        # Its first batch was far from done: it runs again from its start at the next start.
        assert job is not None and (job.status, job.note) == ("queued", RERUN_NOTE), job
    finally:
        store.close()
    reply = answer[0]
    assert not isinstance(reply, httpx.Response) or reply.status_code == 503, reply.text

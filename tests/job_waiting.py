"""Waiting for a queued job in the server tests (FastAPI's TestClient against the native API)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient


def wait_job(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job once it is no longer queued or running (polling `/api/jobs/{id}`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def submitted(client: TestClient, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """The job a POST to `route` queued (answered 202)."""
    answer = client.post(route, json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()

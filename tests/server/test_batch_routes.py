"""`/api/batch`: `emaki batch` over HTTP on the demo model (in-process server, real worker)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job

from emaki.batch.spec import read_batch
from emaki.batch.summary import COLUMNS
from emaki.server import ServerSettings, create_app
from emaki.workspace import workspace_from_environment

FAST = {"steps": 1, "width": 64, "height": 64, "sampler_name": "Euler a"}
RED = FAST | {"prompt": "a red cube", "seed": 1}
BLUE = FAST | {"prompt": "a blue cube", "seed": 2}
GREEN = FAST | {"prompt": "a green cube", "seed": 3}


def settings(home: Path, *, run_worker: bool = True) -> ServerSettings:
    workspace = workspace_from_environment({"EMAKI_HOME": str(home)})
    return ServerSettings(workspace=workspace, precision="fp32", threads=1, run_worker=run_worker)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path_factory.mktemp("batch-home")))) as test_client:
        yield test_client


def job_count(client: TestClient) -> int:
    return len(client.get("/api/jobs", params={"limit": 1000}).json())


def summary(client: TestClient, name: str) -> list[dict[str, str]]:
    response = client.get(f"/api/batch/{name}/summary.csv")
    assert response.status_code == 200, response.text
    assert response.text.splitlines()[0] == ",".join(COLUMNS)
    return list(csv.DictReader(io.StringIO(response.text)))


def test_a_batch_queues_its_items_and_a_repost_queues_only_what_is_new(client: TestClient, tmp_path: Path) -> None:
    before = job_count(client)
    posted = client.post("/api/batch", json={"name": "run1", "items": [RED, BLUE, RED]})
    assert posted.status_code == 202, posted.text
    body = posted.json()
    assert (body["queued"], body["skipped"], body["total"], len(body["jobs"])) == (2, 1, 3, 2)  # RED twice: made once
    again = client.post("/api/batch", json={"name": "run1", "items": [RED, BLUE, RED]}).json()
    assert (again["queued"], again["skipped"], again["jobs"]) == (0, 3, [])  # queued, running or done: kept
    for job_id in body["jobs"]:
        assert wait_job(client, job_id)["status"] == "done"
    assert job_count(client) == before + 2

    progress = client.get("/api/batch/run1").json()
    assert {k: progress[k] for k in ("total", "done", "failed", "queued", "running", "duplicate")} == {
        "total": 3, "done": 2, "failed": 0, "queued": 0, "running": 0, "duplicate": 1}
    assert progress["items_per_s"] > 0 and progress["eta_s"] == 0

    rows = summary(client, "run1")
    assert [row["status"] for row in rows] == ["done", "done", "duplicate"]
    assert rows[2]["error"] == "same image as line 1"
    home = Path(client.app.state.service.engine.workspace.home)
    for row in rows[:2]:
        assert (home / "outputs" / row["file"]).is_file() and float(row["seconds"]) > 0
    # the same content keys as `emaki batch` gives the same lines of a file (its resume)
    lines = tmp_path / "run1.jsonl"
    lines.write_text("\n".join(json.dumps(item) for item in (RED, BLUE, RED)))
    assert [row["key"] for row in rows] == [item.key for item in read_batch(lines)]

    grown = client.post("/api/batch", json={"name": "run1", "jsonl": "\n".join(json.dumps(item) for item in (
        RED, BLUE, GREEN))}).json()
    assert (grown["queued"], grown["skipped"], grown["total"]) == (1, 2, 3)
    assert wait_job(client, grown["jobs"][0])["status"] == "done"
    assert [row["status"] for row in summary(client, "run1")] == ["skipped", "skipped", "done"]
    assert job_count(client) == before + 3


def first_step(client: TestClient, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not client.get(f"/api/jobs/{job_id}/progress").json():
        assert time.monotonic() < deadline, client.get(f"/api/jobs/{job_id}").json()
        time.sleep(0.02)


def test_cancelling_a_batch_stops_its_queued_and_running_jobs_and_a_repost_runs_them(client: TestClient) -> None:
    long = FAST | {"prompt": "a long cube", "seed": 4, "steps": 100}  # caught mid-job (one worker: the rest wait)
    items = [RED, long, BLUE, GREEN]
    posted = client.post("/api/batch", json={"name": "stop1", "items": items}).json()
    red, running, *queued = posted["jobs"]
    assert wait_job(client, red)["status"] == "done"
    first_step(client, running)

    cancelled = client.post("/api/batch/stop1/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["stopped"] == 3 and cancelled.json()["cancelled"] >= 2  # the running one ends soon
    assert wait_job(client, running)["status"] == "interrupted"
    assert [wait_job(client, job_id)["status"] for job_id in queued] == ["cancelled", "cancelled"]
    progress = client.get("/api/batch/stop1").json()
    assert {k: progress[k] for k in ("total", "done", "cancelled", "failed", "queued", "running")} == {
        "total": 4, "done": 1, "cancelled": 3, "failed": 0, "queued": 0, "running": 0}
    assert [row["status"] for row in summary(client, "stop1")] == ["done", "failed", "failed", "failed"]
    again = client.post("/api/batch/stop1/cancel").json()
    assert again["stopped"] == 0 and again["done"] == 1  # nothing left to stop; the done one kept

    resumed = client.post("/api/batch", json={"name": "stop1", "items": items}).json()
    assert (resumed["queued"], resumed["skipped"]) == (3, 1) and red not in resumed["jobs"]
    assert [wait_job(client, job_id)["status"] for job_id in resumed["jobs"]] == ["done"] * 3
    assert client.get("/api/batch/stop1").json()["done"] == 4
    assert [row["status"] for row in summary(client, "stop1")] == ["skipped", "done", "done", "done"]
    assert client.post("/api/batch/nosuch/cancel").status_code == 404


def test_a_bad_item_is_422_naming_it_and_nothing_is_queued(client: TestClient) -> None:
    before = job_count(client)
    response = client.post("/api/batch", json={"name": "bad", "items": [RED, FAST | {"prompt": "x", "steps": 0}]})
    assert response.status_code == 422 and "items[1].steps" in response.json()["detail"]
    response = client.post("/api/batch", json={"name": "bad", "items": [RED, FAST | {"prompt": "x", "speed": "turbo"}]})
    assert response.status_code == 422 and "items[1].speed: expected exact or fast" in response.json()["detail"]
    response = client.post("/api/batch", json={"name": "bad", "jsonl": json.dumps(RED) + "\n\n{not json"})
    assert response.status_code == 422 and "jsonl:3" in response.json()["detail"]
    response = client.post("/api/batch", json={"name": "bad", "items": [RED, FAST | {"prompt": "x", "model": "nope"}]})
    assert response.status_code in (400, 422) and "items[1]" in response.json()["detail"]
    assert job_count(client) == before
    assert client.get("/api/batch/bad").status_code == 404


def test_a_refused_prompt_is_400_naming_the_item_and_nothing_is_queued(client: TestClient) -> None:
    before = job_count(client)
    response = client.post("/api/batch", json={"name": "refused", "items": [RED, FAST | {"prompt": "loli, nude"}]})
    assert response.status_code == 400
    assert response.json()["error"] == "PolicyViolation" and response.json()["detail"].startswith("items[1]: ")
    assert job_count(client) == before
    assert client.get("/api/batch/refused").status_code == 404


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "x" * 65, ""])
def test_a_batch_name_is_a_plain_name(client: TestClient, name: str) -> None:
    response = client.post("/api/batch", json={"name": name, "items": [RED]})
    assert response.status_code == 422 and "name" in response.json()["detail"]


def test_an_unknown_batch_is_404_naming_it(client: TestClient) -> None:
    for path in ("/api/batch/nosuch", "/api/batch/nosuch/summary.csv"):
        response = client.get(path)
        assert response.status_code == 404 and "nosuch" in response.json()["detail"]
    assert client.get("/api/batch/..%2Fjobs").status_code in (404, 422)


def test_a_batch_too_large_is_refused(client: TestClient) -> None:
    response = client.post("/api/batch", json={"name": "huge", "items": [{}] * 10_001})
    assert response.status_code == 422 and "10,000" in response.json()["detail"]
    response = client.post("/api/batch", content=b" " * (16 * 1024 * 1024 + 1),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_restarted_server_knows_its_batches(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with TestClient(create_app(settings(home, run_worker=False))) as first:
        posted = first.post("/api/batch", json={"name": "kept", "items": [RED, BLUE]}).json()
        assert posted["queued"] == 2
        assert first.get("/api/batch/kept").json()["queued"] == 2
    with TestClient(create_app(settings(home))) as second:  # a new server over the same home
        assert second.get("/api/batch/kept").json()["total"] == 2
        for job_id in posted["jobs"]:
            assert wait_job(second, job_id)["status"] == "done"
        assert second.get("/api/batch/kept").json()["done"] == 2
        again = second.post("/api/batch", json={"name": "kept", "items": [RED, BLUE]}).json()
        assert (again["queued"], again["skipped"]) == (0, 2)
        assert [row["status"] for row in summary(second, "kept")] == ["skipped", "skipped"]

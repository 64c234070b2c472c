"""X/Y/Z plots over HTTP (in-process, demo model, 64x64, 2 steps, 2x1 grids): A1111's
`script_name: "X/Y/Z plot"` with its positional `script_args` (18 and the older 14), the native
`/api/grid`, checks before queueing, per-cell progress, interrupts keeping the finished cells, and
an old database taking the `grid` job kind."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.jobs.store import JobStore
from emaki.server import ServerSettings, create_app

FAST = {"prompt": "1girl, smile", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5}
# A1111's txt2img axis numbers (v1.10.1): 4 Steps, 6 CFG Scale, 7 Prompt S/R; img2img: 4 Steps.
STEPS, CFG, PROMPT_SR = 4, 6, 7


def script_args(x_type: int, x_values: str, *, lone: bool = False, old: bool = False) -> list[Any]:
    """A1111's positional X/Y/Z `script_args`: 18 (A1111 1.7 and later) or 14 (older)."""
    args: list[Any] = [x_type, x_values, [], 0, "", [], 0, "", [], True, lone, False, False]
    return args + [0] if old else args + [False, False, False, 0, False]


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_a1111_xyz_plot_with_18_args_answers_grid_then_cells(client: TestClient) -> None:
    body = {**FAST, "script_name": "x/y/z PLOT", "script_args": script_args(CFG, "5, 7", lone=True)}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    images = [decoded(data) for data in response.json()["images"]]
    assert len(images) == 3  # the grid, then both cells
    assert images[0].width >= 128 and images[1].size == images[2].size == (64, 64)
    info = json.loads(response.json()["info"])
    assert len(info["infotexts"]) == 3
    assert "Script: X/Y/Z plot" in info["infotexts"][0] and "X Type: CFG Scale" in info["infotexts"][0]
    assert "CFG scale: 5" in info["infotexts"][1] and "CFG scale: 7" in info["infotexts"][2]
    assert [job["kind"] for job in client.get("/api/jobs").json()] == ["grid"]


def test_a1111_xyz_plot_with_14_args_on_img2img(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 90)).save(buffer, format="PNG")
    body = {**FAST, "init_images": [base64.b64encode(buffer.getvalue()).decode()], "denoising_strength": 0.5,
            "script_name": "X/Y/Z plot", "script_args": script_args(STEPS, "1-2", old=True)}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1  # without include_lone_images: the grid only
    info = json.loads(response.json()["info"])
    assert len(info["infotexts"]) == 1 and "X Type: Steps, X Values: 1-2" in info["infotexts"][0]
    job = client.get("/api/jobs").json()[0]
    assert job["kind"] == "grid" and job["status"] == "done" and len(job["result"]["infotexts"]) == 3


def test_a1111_dropdown_axis_takes_the_dropdown_values_unless_csv_mode(client: TestClient) -> None:
    args = script_args(9, "", lone=True)  # 9: Sampler on the txt2img tab
    args[2] = ["Euler", "DDIM"]
    response = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot", "script_args": args})
    assert response.status_code == 200, response.text
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert "Sampler: Euler," in infotexts[1] and "Sampler: DDIM," in infotexts[2]
    args[1], args[-1] = "Euler a", True  # csv_mode: the text box counts, the dropdown not
    response = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot", "script_args": args})
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 2  # the grid and its one cell


def test_native_grid_route_queues_one_grid_job(client: TestClient) -> None:
    response = client.post("/api/grid", json={"params": FAST, "x": {"axis": "Steps", "values": [1, 2]}})
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "grid"
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "done", job
    assert len(job["images"]) == 3  # the grid first, then the cells, in the gallery
    assert "Script: X/Y/Z plot" in job["images"][0]["infotext"] and job["images"][0]["width"] >= 128
    assert job["result"]["infotexts"][0] == job["images"][0]["infotext"]
    assert [image["width"] for image in job["images"][1:]] == [64, 64]


def test_a_bad_axis_is_422_before_queueing(client: TestClient) -> None:
    bad_index = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot",
                                                       "script_args": script_args(999, "1, 2")})
    assert bad_index.status_code == 422 and "x_type" in bad_index.text, bad_index.text
    bad_count = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot", "script_args": [6]})
    assert bad_count.status_code == 422 and "script_args" in bad_count.text
    bad_value = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot",
                                                       "script_args": script_args(STEPS, "1, many")})
    assert bad_value.status_code == 422 and "many" in bad_value.text, bad_value.text
    unknown = client.post("/api/grid", json={"params": FAST, "x": {"axis": "Bogus", "values": "1, 2"}})
    assert unknown.status_code == 422 and "Bogus" in unknown.text, unknown.text
    assert client.get("/api/jobs").json() == []


def test_a_refused_prompt_in_a_prompt_sr_value_is_400_before_queueing(client: TestClient) -> None:
    a1111 = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "X/Y/Z plot",
                                                   "script_args": script_args(PROMPT_SR, 'smile, "loli, nude"')})
    assert a1111.status_code == 400 and a1111.json()["error"] == "PolicyViolation", a1111.text
    native = client.post("/api/grid", json={"params": FAST,
                                            "x": {"axis": "Prompt S/R", "values": ["smile", "loli, nude"]}})
    assert native.status_code == 400 and native.json()["error"] == "PolicyViolation", native.text
    assert client.get("/api/jobs").json() == []


def test_interrupt_keeps_the_finished_cells_and_a_partial_grid() -> None:
    with TestClient(create_app(ServerSettings(run_worker=False))) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        worker, store = service.worker, service.store
        response = client.post("/api/grid", json={"params": FAST, "x": {"axis": "CFG Scale", "values": "5, 7"}})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        seen: list[dict[str, Any]] = []
        on_grid = worker._on_grid

        def watching(update: Any) -> None:  # what a client sees as the grid runs; an interrupt at cell 2
            on_grid(update)
            seen.append(client.get(f"/api/jobs/{job_id}/progress").json() or {})
            if update.cell == 2 and update.generation is None:
                assert client.post("/sdapi/v1/interrupt").status_code == 200

        worker._on_grid = watching
        worker.run_job(store.claim_next(timeout=0))
        job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "interrupted", job
    assert len(job["images"]) == 2  # the partial grid and the one finished cell
    assert "Script: X/Y/Z plot" in job["images"][0]["infotext"] and Path(job["images"][0]["url"]).name
    assert job["result"]["cells_done"] == 1 and job["result"]["cells"] == 2
    cells = {(event.get("kind"), event.get("cell"), event.get("cells")) for event in seen}
    assert ("grid", 1, 2) in cells and ("grid", 2, 2) in cells


OLD_JOBS = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    kind TEXT NOT NULL DEFAULT 'generate' CHECK (kind IN ('generate', 'train')),
    params TEXT NOT NULL, keep INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    note TEXT, result TEXT, created REAL NOT NULL, started REAL, finished REAL);
"""


@pytest.mark.parametrize("schema", [OLD_JOBS, OLD_JOBS.replace(
    "kind TEXT NOT NULL DEFAULT 'generate' CHECK (kind IN ('generate', 'train')),", "")],
    ids=["kind-without-grid", "before-kinds"])
def test_an_old_database_takes_grid_jobs(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "emaki.db"
    with sqlite3.connect(path) as db:
        db.executescript(schema)
        db.execute("INSERT INTO jobs (id, status, params, created) VALUES ('old', 'done', '{}', 1.0)")
    db.close()
    store = JobStore(path)
    try:
        job = store.submit({"params": {}, "spec": {}}, kind="grid")
        assert job.kind == "grid" and job.seq == 2
        old = store.get("old")
        assert old is not None and old.kind == "generate" and old.seq == 1 and old.status == "done"
    finally:
        store.close()
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError):  # the CHECK still holds
        db.execute("INSERT INTO jobs (id, status, kind, params, created) VALUES ('x', 'queued', 'bogus', '{}', 1)")

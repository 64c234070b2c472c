"""Merges and LoRA extraction over HTTP (in-process, real worker, tiny checkpoints in the
server's model folder): `/api/merge` and `/api/lora/extract` queue jobs whose result names a model
the listings then show; bad requests are 4xx naming the field with nothing queued; a cancelled
job leaves no file; a database from before these job kinds takes them."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from interrupting_file_jobs import Interrupting, NoEngine
from job_waiting import submitted, wait_job
from parent_checkpoints import write_parents
from safetensors.torch import load_file

from emaki.jobs.store import JobStore
from emaki.jobs.worker import Worker
from emaki.models.hashes import HashCache
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

UNET_KEY = "model.diffusion_model.out.2.weight"


def home() -> Path:
    return Path(os.environ["EMAKI_HOME"])


@pytest.fixture
def models(tiny_safetensors: Path) -> Path:
    """Checkpoints `a` (the tiny model) and `b` (its weights moved) in the server's model folder."""
    return write_parents(tiny_safetensors, home() / "models", seed=3)


@pytest.fixture
def client(models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_merge_job_makes_a_model_the_listings_show(client: TestClient, models: Path) -> None:
    assert "mix" not in [c["name"] for c in client.get("/api/models").json()["checkpoints"]]  # listed before
    job = submitted(client, "/api/merge", {"models": ["a", "b.safetensors"], "mode": "weighted-sum", "alpha": 0.5,
                                           "blocks": None, "loras": [], "output": "mix.safetensors",
                                           "overwrite": False})
    assert job["kind"] == "merge" and job["status"] in ("queued", "running") and set(job) >= {"id", "images"}
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["name"] == "mix" and done["result"]["filename"] == "mix.safetensors"
    assert "mix" in [c["name"] for c in client.get("/api/models").json()["checkpoints"]]
    assert "mix" in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
    a, b, mix = (load_file(models / f"{n}.safetensors") for n in ("a", "b", "mix"))
    assert torch.allclose(mix[UNET_KEY], (a[UNET_KEY] + b[UNET_KEY]) / 2, atol=1e-6)
    events = client.get(f"/api/jobs/{job['id']}/events").text  # an ended job: its end at once
    assert events.startswith("event: done")


def test_extracted_lora_is_listed_and_bakes_back_into_a(client: TestClient, models: Path) -> None:
    job = submitted(client, "/api/lora/extract", {"tuned": "b", "base": "a", "rank": 4, "output": "moved",
                                                  "overwrite": False})
    assert job["kind"] == "extract-lora"
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    result = done["result"]
    assert result["name"] == "moved" and Path(result["path"]) == home() / "loras" / "moved.safetensors"
    assert 0 < result["relative_error"] < 1 and result["block_errors"]
    assert "moved" in [row["name"] for row in client.get("/api/loras").json()]

    baked = submitted(client, "/api/merge", {"models": ["a"], "loras": [{"name": "moved", "te": 1, "unet": 1}],
                                             "output": "a-moved.safetensors"})
    assert wait_job(client, baked["id"])["status"] == "done"
    recipe = wait_job(client, baked["id"])["result"]["recipe"]
    assert recipe["mode"] == "no-interpolation" and recipe["loras"][0]["name"] == "moved"
    a, out = load_file(models / "a.safetensors"), load_file(models / "a-moved.safetensors")
    moved = [k for k in a if "attn2.to_k" in k and not torch.equal(a[k], out[k])]
    assert moved and all(k.startswith("model.diffusion_model.") for k in moved)  # b's cross-attention


BAD_REQUESTS = [
    ("/api/merge", {"models": ["a", "nope"]}, 400, "models[1]: no checkpoint 'nope'"),
    ("/api/merge", {"models": ["/etc/passwd", "a"]}, 400, "models[0]: '/etc/passwd' is a path"),
    ("/api/merge", {"models": ["a", "b"], "mode": "average"}, 422, "mode"),
    ("/api/merge", {"models": ["a", "b", "a"], "mode": "weighted-sum"}, 400,
     "models: weighted-sum takes 2 models (A, B), got 3"),
    ("/api/merge", {"models": ["a", "b"], "output": "b.safetensors"}, 400, "output: "),
    ("/api/merge", {"models": ["a", "b"], "output": "../up.safetensors"}, 400, "output: '../up.safetensors' is not"),
    ("/api/merge", {"models": ["a", "b"], "loras": [{"name": "ghost"}]}, 400, "loras[0].name: no LoRA 'ghost'"),
    ("/api/merge", {"models": ["a", "b"], "blocks": [1, 2]}, 422, "blocks"),
    ("/api/lora/extract", {"tuned": "b", "base": "a", "rank": 0}, 422, "rank"),
    ("/api/lora/extract", {"tuned": "b", "base": "nope"}, 400, "base: no checkpoint 'nope'"),
]


def test_bad_requests_are_refused_naming_the_field_before_queuing(client: TestClient) -> None:
    for route, body, status, detail in BAD_REQUESTS:
        answer = client.post(route, json={"output": "new.safetensors", **body})
        assert answer.status_code == status, (body, answer.text)
        assert detail in answer.text, (body, answer.text)
    assert client.get("/api/jobs").json() == []


def test_an_existing_output_needs_overwrite(client: TestClient, models: Path) -> None:
    (home() / "loras").mkdir(exist_ok=True)
    (home() / "loras" / "taken.safetensors").write_bytes(b"x")
    answer = client.post("/api/lora/extract", json={"tuned": "b", "base": "a", "output": "taken.safetensors"})
    assert answer.status_code == 400 and "output: " in answer.text and "already exists" in answer.text
    (models / "old.safetensors").write_bytes(b"x")
    answer = client.post("/api/merge", json={"models": ["a", "b"], "output": "old.safetensors"})
    assert answer.status_code == 400 and "already exists" in answer.text
    answer = client.post("/api/merge", json={"models": ["a", "b"], "output": "b.safetensors", "overwrite": True})
    assert answer.status_code == 400 and "output: " in answer.text and "is one of the merge's models" in answer.text
    job = submitted(client, "/api/merge", {"models": ["a", "b"], "output": "old.safetensors", "overwrite": True})
    assert wait_job(client, job["id"])["status"] == "done"
    assert set(load_file(models / "old.safetensors")) == set(load_file(models / "a.safetensors"))


def test_a_cancelled_running_merge_leaves_no_file(models: Path) -> None:
    workspace = Workspace(home())
    store = JobStore(workspace.database)
    files = Interrupting(workspace, HashCache(None))
    worker = Worker(store, NoEngine(), files)  # type: ignore[arg-type]  (file jobs need no engine)
    files.worker, files.seen = worker, []
    try:
        job = store.submit({"models": [str(models / "a.safetensors"), str(models / "b.safetensors")],
                            "output": "half.safetensors"}, kind="merge")
        claimed = store.claim_next(timeout=1)
        assert claimed is not None and claimed.id == job.id
        worker.run_job(claimed)
        ended = store.get(job.id)
        assert ended is not None and ended.status == "interrupted", ended
        assert sorted(p.name for p in models.iterdir()) == ["a.safetensors", "b.safetensors"]  # no .partial
        assert len(files.seen) == 1 and files.seen[0][0] == "merge" and 0 < files.seen[0][1] < files.seen[0][2]
    finally:
        store.close()


def test_a_queued_merge_can_be_cancelled(models: Path) -> None:
    with TestClient(create_app(ServerSettings(run_worker=False))) as client:
        job = submitted(client, "/api/merge", {"models": ["a", "b"], "output": "never.safetensors"})
        assert client.post(f"/api/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert not (models / "never.safetensors").exists()


def test_a_database_from_before_merge_jobs_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    kind TEXT NOT NULL DEFAULT 'generate' CHECK (kind IN ('generate', 'train', 'grid')),
    params TEXT NOT NULL, keep INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    note TEXT, result TEXT, created REAL NOT NULL, started REAL, finished REAL);""")
        db.execute("INSERT INTO jobs (id, status, kind, params, created) VALUES ('old', 'done', 'grid', '{}', 1.0)")
    db.close()
    store = JobStore(path)
    try:
        assert store.submit({}, kind="merge").kind == "merge"
        assert store.submit({}, kind="extract-lora").kind == "extract-lora"
        old = store.get("old")
        assert old is not None and old.kind == "grid" and old.seq == 1
    finally:
        store.close()

"""`POST /api/lineage` (in-process, real worker, tiny checkpoints in the server's model folder): a
merge made through `/api/merge` is traced back to its parents with the right amounts, in the
job's result; bad requests are 4xx naming the field with nothing queued; a running trace is
interrupted by a cancel, a queued one cancelled."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from interrupting_file_jobs import Interrupting, NoEngine
from job_waiting import submitted, wait_job
from parent_checkpoints import write_parents

from emaki.jobs.store import JobStore
from emaki.jobs.worker import Worker
from emaki.merge.blocks import UNET_BLOCKS
from emaki.models.hashes import HashCache
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

ALPHA = 0.3


def home() -> Path:
    return Path(os.environ["EMAKI_HOME"])


@pytest.fixture
def models(tiny_safetensors: Path) -> Path:
    """Checkpoints `a` (the tiny model) and `b` (every weight of it moved) in the model folder."""
    return write_parents(tiny_safetensors, home() / "models", seed=5)


@pytest.fixture
def client(models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_a_merge_is_traced_back_to_its_parents(client: TestClient, models: Path) -> None:
    merged = submitted(client, "/api/merge", {"models": ["a", "b"], "alpha": ALPHA, "output": "mix.safetensors"})
    assert wait_job(client, merged["id"])["status"] == "done"
    # listed as soon as the job is seen done (its end made the listing stale before it was recorded)
    assert "mix" in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]

    job = submitted(client, "/api/lineage", {"model": "mix", "candidates": ["a", "b.safetensors"]})
    assert job["kind"] == "lineage" and job["status"] in ("queued", "running")
    assert job["params"]["candidates"] == [str(models / "a.safetensors"), str(models / "b.safetensors")]
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    assert client.get(f"/api/jobs/{job['id']}").json()["result"] == done["result"]
    result = done["result"]
    a, b = result["candidates"]
    assert result["kind"] == "lineage" and result["model"] == str(models / "mix.safetensors")
    assert result["method"] == "least squares"
    unet = [block for block in result["blocks"] if block in UNET_BLOCKS]
    assert unet and {"TE", "VAE"} <= set(result["blocks"])
    for block, fit in result["blocks"].items():
        assert fit["coefficients"][a] == pytest.approx(1 - ALPHA, abs=1e-3), block
        assert fit["coefficients"][b] == pytest.approx(ALPHA, abs=1e-3), block
        assert fit["residual"] < 1e-3 and fit["tensors"] > 0
    assert result["summary"][0].startswith(f"{unet[0]}–") and ": 0.70·a + 0.30·b (residual " in result["summary"][0]
    assert client.get(f"/api/jobs/{job['id']}/events").text.startswith("event: done")
    # nothing was written: the listings show the same three checkpoints
    assert sorted(c["name"] for c in client.get("/api/models").json()["checkpoints"]
                  if c["name"] in ("a", "b", "mix")) == ["a", "b", "mix"]
    assert sorted(p.name for p in models.iterdir()) == ["a.safetensors", "b.safetensors", "mix.safetensors"]

    sparse = submitted(client, "/api/lineage", {"model": "mix", "candidates": ["a", "b"], "nonnegative": True})
    assert wait_job(client, sparse["id"])["result"]["method"] == "nonnegative least squares"


BAD_REQUESTS = [
    ({"model": "nope", "candidates": ["a"]}, 400, "model: no checkpoint 'nope'"),
    ({"model": "a", "candidates": ["b", "ghost"]}, 400, "candidates[1]: no checkpoint 'ghost'"),
    ({"model": "a", "candidates": ["../b.safetensors"]}, 400, "candidates[0]: '../b.safetensors' is a path"),
    ({"model": "a", "candidates": []}, 422, "candidates"),
    ({"model": "a"}, 422, "candidates"),
    ({"model": "a", "candidates": ["b"] * 17}, 422, "candidates"),
    ({"model": "a", "candidates": ["b", "b.safetensors"]}, 400, "candidates[1]: "),
    ({"model": "a", "candidates": ["b"], "nonnegative": "yes"}, 422, "nonnegative"),
    ({"model": "a", "candidates": ["b"], "alpha": 0.3}, 422, "alpha"),
]


def test_bad_requests_are_refused_naming_the_field_before_queuing(client: TestClient) -> None:
    for body, status, detail in BAD_REQUESTS:
        answer = client.post("/api/lineage", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert detail in answer.text, (body, answer.text)
    assert "same file as candidates[0]" in client.post(
        "/api/lineage", json={"model": "a", "candidates": ["b", "b.safetensors"]}).text
    assert client.get("/api/jobs").json() == []


def test_a_cancelled_running_lineage_is_interrupted(models: Path) -> None:
    workspace = Workspace(home())
    store = JobStore(workspace.database)
    files = Interrupting(workspace, HashCache(None))
    worker = Worker(store, NoEngine(), files)  # type: ignore[arg-type]  (file jobs need no engine)
    files.worker, files.seen = worker, []
    try:
        job = store.submit({"model": str(models / "b.safetensors"), "candidates": [str(models / "a.safetensors")],
                            "nonnegative": False}, kind="lineage")
        claimed = store.claim_next(timeout=1)
        assert claimed is not None and claimed.id == job.id
        worker.run_job(claimed)
        ended = store.get(job.id)
        assert ended is not None and ended.status == "interrupted", ended
        assert len(files.seen) == 1 and files.seen[0][0] == "lineage" and 0 < files.seen[0][1] < files.seen[0][2]
    finally:
        store.close()


def test_a_queued_lineage_can_be_cancelled(models: Path) -> None:
    with TestClient(create_app(ServerSettings(run_worker=False))) as client:
        job = submitted(client, "/api/lineage", {"model": "a", "candidates": ["b"]})
        cancelled = client.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["result"] is None

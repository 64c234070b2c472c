"""Training through the server, in-process (TestClient, real worker, demo model, 3 drawn faces):
A1111's create/train routes, the native training job with its events, cancel and restart, the
refusals, and the job store's migration."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job

from emaki.jobs.store import JobStore
from emaki.jobs.worker import STOPPED_NOTE
from emaki.networks.embeddings import load_embedding
from emaki.networks.hypernetworks import load_hypernetwork
from emaki.server import ServerSettings, create_app
from emaki.workspace import default_home

QUICK = {"preview_every": 0, "save_every": 0}
A1111_QUICK = {"create_image_every": 0, "save_embedding_every": 0, "save_hypernetwork_every": 0}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """Three demo-model faces with booru-tag captions."""
    from emaki.demo.faces import FaceAttributes, draw_face

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, hair in enumerate(["red", "blue", "green"]):
        draw_face(FaceAttributes(hair, "long hair", "blue", "smile", "white")).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"1girl, {hair} hair, long hair, smile")
    return folder


def home() -> Path:
    return default_home(os.environ)


def wait_step(client: TestClient, at_least: int, timeout: float = 60) -> dict[str, Any]:
    """`/sdapi/v1/progress` once the running training job has made `at_least` steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get("/sdapi/v1/progress").json()
        if progress["state"]["sampling_step"] >= at_least:
            return progress
        time.sleep(0.02)
    raise AssertionError("training made no progress")


def refusal(response: Any, status: int, task: str, *words: str) -> None:
    """An A1111 training route's error: a 4xx whose `detail` and `info` both say why."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["info"] == f"{task} error: {body['detail']}"
    for word in words:
        assert word in body["detail"], body


def test_a1111_create_routes_write_loadable_files(client: TestClient) -> None:
    created = client.post("/sdapi/v1/create/embedding", json={
        "name": "nekomimi", "num_vectors_per_token": 2, "overwrite_old": False, "init_text": "cat ears"})
    assert created.status_code == 200, created.text
    path = home() / "embeddings" / "nekomimi.pt"
    assert created.json() == {"info": f"create embedding filename: {path}"}
    embedding = load_embedding(path)
    assert tuple(embedding.vectors.shape) == (2, 128) and embedding.step == 0  # the demo model's text width
    assert client.get("/sdapi/v1/embeddings").json()["loaded"]["nekomimi"]["vectors"] == 2

    again = client.post("/sdapi/v1/create/embedding", json={"name": "nekomimi", "num_vectors_per_token": 1})
    refusal(again, 422, "create embedding", "already exists", "overwrite_old")
    replaced = client.post("/sdapi/v1/create/embedding", json={"name": "nekomimi", "num_vectors_per_token": 1,
                                                                "overwrite_old": True})
    assert replaced.status_code == 200 and load_embedding(path).vectors.shape[0] == 1

    # A1111 sends the structures as "1, 2, 1" text; lists work too.
    hyper = client.post("/sdapi/v1/create/hypernetwork", json={
        "name": "soft", "enable_sizes": ["128", "64"], "overwrite_old": False, "layer_structure": "1, 2, 1",
        "activation_func": "relu", "weight_init": "XavierNormal", "add_layer_norm": True, "use_dropout": True,
        "dropout_structure": "0, 0.1, 0"})
    assert hyper.status_code == 200, hyper.text
    hyper_path = home() / "hypernetworks" / "soft.pt"
    assert hyper.json() == {"info": f"create hypernetwork filename: {hyper_path}"}
    network = load_hypernetwork(hyper_path)
    assert network.sizes == [64, 128] and network.layer_structure == [1.0, 2.0, 1.0]
    assert network.activation_func == "relu" and network.is_layer_norm and network.dropout_structure == [0, 0.1, 0]
    assert [row["name"] for row in client.get("/sdapi/v1/hypernetworks").json()] == ["soft"]
    listed = client.post("/sdapi/v1/create/hypernetwork", json={"name": "plain", "layer_structure": [1, 1.5, 1]})
    assert listed.status_code == 200 and load_hypernetwork(home() / "hypernetworks" / "plain.pt").dropout_structure \
        == [0, 0, 0]
    refusal(client.post("/sdapi/v1/create/hypernetwork", json={"name": "soft"}), 422, "create hypernetwork",
            "already exists")


def test_a1111_create_refusals_are_4xx_with_info(client: TestClient) -> None:
    refusal(client.post("/sdapi/v1/create/embedding", json={"num_vectors_per_token": 1}), 422, "create embedding",
            "name")
    refusal(client.post("/sdapi/v1/create/embedding", json={"name": "x", "num_vectors_per_token": 100}), 422,
            "create embedding", "num_vectors_per_token")
    refusal(client.post("/sdapi/v1/create/embedding", json={"name": "/../"}), 422, "create embedding", "name")
    refusal(client.post("/sdapi/v1/create/hypernetwork", json={"name": "h", "layer_structure": "1, two, 1"}), 422,
            "create hypernetwork", "layer_structure")
    refused = client.post("/sdapi/v1/create/embedding", json={"name": "loli nude"})
    refusal(refused, 400, "create embedding", "Refused")
    assert refused.json()["error"] == "PolicyViolation"
    assert not (home() / "embeddings").exists() or not list((home() / "embeddings").iterdir())


def test_a1111_train_routes_go_on_from_the_stored_step(client: TestClient, faces: Path) -> None:
    assert client.post("/sdapi/v1/create/embedding", json={"name": "neko", "num_vectors_per_token": 2}).status_code \
        == 200
    path = home() / "embeddings" / "neko.pt"
    body = {"embedding_name": "neko", "learn_rate": 0.005, "batch_size": 1, "gradient_step": 1,
            "data_root": str(faces), "log_directory": "textual_inversion", "training_width": 64,
            "training_height": 64, "varsize": False, "steps": 3, "clip_grad_mode": "disabled", "clip_grad_value": 0.1,
            "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "once", "use_weight": False,
            "template_filename": "subject_filewords.txt", "save_image_with_stored_embedding": True,
            "preview_from_txt2img": False, "preview_prompt": "", "preview_negative_prompt": "",
            "preview_steps": 20, "preview_sampler_name": "Euler a", "preview_cfg_scale": 7, "preview_seed": -1,
            "preview_width": 512, "preview_height": 512, **A1111_QUICK}
    trained = client.post("/sdapi/v1/train/embedding", json=body)
    assert trained.status_code == 200, trained.text
    assert trained.json() == {"info": f"train embedding complete: filename: {path} error: None"}
    assert load_embedding(path).step == 3
    # A relative log folder is under the home; each network logs (and resumes) in its own.
    assert (home() / "textual_inversion" / "embeddings" / "neko" / "loss.csv").is_file()
    more = client.post("/sdapi/v1/train/embedding", json={**body, "steps": 5})
    assert more.status_code == 200 and load_embedding(path).step == 5  # resumed, as A1111 does

    hyper_body = {"hypernetwork_name": "hn", "learn_rate": "0.00001", "data_root": str(faces), "steps": 2,
                  "clip_grad_mode": "norm", "clip_grad_value": "0.5", **A1111_QUICK}
    assert client.post("/sdapi/v1/create/hypernetwork", json={"name": "hn"}).status_code == 200
    hyper = client.post("/sdapi/v1/train/hypernetwork", json=hyper_body)
    hyper_path = home() / "hypernetworks" / "hn.pt"
    assert hyper.json() == {"info": f"train hypernetwork complete: filename: {hyper_path} error: None"}
    assert load_hypernetwork(hyper_path).step == 2


def test_a1111_train_refusals_name_the_a1111_fields(client: TestClient, faces: Path) -> None:
    base = {"embedding_name": "e", "data_root": str(faces), "steps": 2, **A1111_QUICK}
    refusal(client.post("/sdapi/v1/train/embedding", json={"embedding_name": "e", "steps": 2}), 422,
            "train embedding", "data_root")
    refusal(client.post("/sdapi/v1/train/embedding", json={**base, "data_root": str(faces / "missing")}), 422,
            "train embedding", "data_root:")
    refusal(client.post("/sdapi/v1/train/embedding", json={**base, "training_width": 60, "training_height": 64}),
            422, "train embedding", "training_width:")
    refusal(client.post("/sdapi/v1/train/embedding", json={**base, "steps": 0}), 422, "train embedding", "steps")
    refusal(client.post("/sdapi/v1/train/embedding", json={**base, "template_filename": "../../etc/passwd"}), 400,
            "train embedding", "template_filename")
    refusal(client.post("/sdapi/v1/train/embedding", json={**base, "log_directory": "/etc"}), 400,
            "train embedding", "log_directory")
    refusal(client.post("/sdapi/v1/train/hypernetwork", json={**base, "hypernetwork_name": "h",
                                                              "learn_rate": 0.005}), 422, "train hypernetwork",
            "learn_rate")
    assert client.get("/api/jobs").json() == []  # nothing was queued

    # The captions are judged by the trainer: the job fails, the answer is the policy's 400.
    (faces / "0.txt").write_text("loli, nude")
    refused = client.post("/sdapi/v1/train/embedding", json=base)
    refusal(refused, 400, "train embedding", "Refused", "0.txt")
    assert refused.json()["error"] == "PolicyViolation"
    assert not (home() / "embeddings" / "e.pt").exists()


def read_events(client: TestClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name in ("done", "failed", "interrupted", "cancelled"):
                    break
    return events


def test_native_training_job_streams_losses_and_previews(client: TestClient, faces: Path) -> None:
    response = client.post("/api/train", json={"kind": "embedding", "name": "kitsune", "data": str(faces),
                                               "steps": 8, "preview_every": 4, "save_every": 4, "preview_steps": 2,
                                               "num_vectors_per_token": 2, "template": "tags_filewords"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "train" and job["status"] == "queued" and job["params"]["data"] == str(faces)
    events = read_events(client, job["id"])
    name, end = events[-1]
    assert name == "done" and end["status"] == "done" and end["kind"] == "train"
    path = home() / "embeddings" / "kitsune.pt"
    assert end["result"]["path"] == str(path) and end["result"]["step"] == 8 and not end["result"]["cancelled"]
    assert load_embedding(path).step == 8 and len(end["result"]["previews"]) == 2
    progress = [data for name, data in events if name == "progress"]
    assert progress and all(data["kind"] == "train" for data in progress)
    series = [data["training"]["losses"] for data in progress]
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(series))  # the series grows
    last = progress[-1]["training"]
    assert last["total"] == 8 and last["losses"][-1][0] == last["step"] and last["loss"] == last["losses"][-1][1]
    assert [point[0] for point in last["losses"]] == list(range(1, last["step"] + 1))
    assert {"learn_rate", "epoch", "epoch_step", "rollbacks", "message", "preview"} <= last.keys()
    # Events come at most 5 a second: the step that drew the preview may fall between two of
    # them, but the latest preview stays in every event after it.
    assert last["step"] < 4 or last["preview"] is not None
    assert progress[-1]["progress"] == pytest.approx(last["step"] / 8)
    assert client.get(f"/api/jobs/{job['id']}/progress").json() is None  # not running any more


def test_cancel_saves_the_file_and_progress_reports_training(client: TestClient, faces: Path) -> None:
    job = client.post("/api/train", json={"kind": "hypernetwork", "name": "longrun", "data": str(faces),
                                          "steps": 100_000, **QUICK}).json()
    progress = wait_step(client, 3)
    assert 0 < progress["progress"] < 0.001 and progress["state"]["job"] == job["id"]
    assert progress["textinfo"].startswith("Training hypernetwork longrun: step ")
    assert "/100000, loss " in progress["textinfo"]
    event = client.get(f"/api/jobs/{job['id']}/progress").json()
    assert event["training"]["total"] == 100_000 and event["training"]["losses"]
    # Creating needs the model the run holds: refused at once rather than after the run.
    busy = client.post("/sdapi/v1/create/embedding", json={"name": "later"})
    refusal(busy, 409, "create embedding", "longrun", "is training")
    client.post(f"/api/jobs/{job['id']}/cancel")
    ended = wait_job(client, job["id"])
    assert ended["status"] == "interrupted" and ended["result"]["cancelled"]
    saved = load_hypernetwork(home() / "hypernetworks" / "longrun.pt")
    assert saved.step == ended["result"]["step"] >= 3

    # A1111's interrupt stops a training job too; its route answers as A1111 does.
    other = client.post("/api/train", json={"kind": "embedding", "name": "short", "data": str(faces),
                                            "steps": 100_000, **QUICK}).json()
    wait_step(client, 2)
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    assert wait_job(client, other["id"])["status"] == "interrupted"
    assert load_embedding(home() / "embeddings" / "short.pt").step >= 2


def test_native_refusals_are_4xx_naming_the_field(client: TestClient, faces: Path) -> None:
    base = {"kind": "embedding", "name": "e", "data": str(faces), "steps": 2}
    cases = [
        ({"steps": 0}, 422, "steps"), ({"learn_rate": "fast"}, 422, "learn_rate"),
        ({"kind": "textual"}, 422, "kind"), ({"no_such_field": 1}, 422, "no_such_field"),
        ({"data": str(faces / "none")}, 422, "data:"), ({"resume": True, "overwrite": True}, 422, "resume"),
        ({"kind": "hypernetwork", "learn_rate": "0.005"}, 422, "learn_rate"),
        ({"template": "/etc/passwd"}, 400, "template"), ({"log_directory": "../../elsewhere"}, 400, "log_directory"),
        ({"model": "../../x.safetensors"}, 400, "model"),
        ({"preview_prompt": "loli, nude"}, 400, "Refused"), ({"name": "loli nude"}, 400, "Refused"),
    ]
    for change, status, word in cases:
        response = client.post("/api/train", json={**base, **change})
        assert response.status_code == status, (change, response.text)
        assert word in response.json()["detail"], (change, response.json())
    assert client.get("/api/jobs").json() == []


def test_refused_caption_fails_the_job_and_writes_nothing(client: TestClient, faces: Path) -> None:
    (faces / "1.txt").write_text("1girl, loli, nude")
    job = client.post("/api/train", json={"kind": "embedding", "name": "bad", "data": str(faces), "steps": 2,
                                          **QUICK}).json()
    ended = wait_job(client, job["id"])
    assert ended["status"] == "failed" and "Refused" in ended["error"] and "1.txt" in ended["error"]
    assert ended["result"] == {"error_type": "PolicyViolation"}
    assert not (home() / "embeddings" / "bad.pt").exists()
    # The worker goes on with the next job.
    (faces / "1.txt").write_text("1girl, blue hair")
    fine = client.post("/api/train", json={"kind": "embedding", "name": "good", "data": str(faces), "steps": 2,
                                           **QUICK}).json()
    assert wait_job(client, fine["id"])["status"] == "done"


def test_a_training_job_goes_on_after_a_stop_and_after_a_crash(faces: Path) -> None:
    path = home() / "embeddings" / "persist.pt"
    with TestClient(create_app(ServerSettings())) as first:
        job = first.post("/api/train", json={"kind": "embedding", "name": "persist", "data": str(faces),
                                             "steps": 100_000, **QUICK}).json()
        wait_step(first, 2)
    # Stopped by the server's stop: saved, and back in the queue.
    store = JobStore(home() / "server.db")
    stopped = store.get(job["id"])
    store.close()
    assert stopped is not None and stopped.status == "queued" and stopped.note == STOPPED_NOTE
    step = load_embedding(path).step
    assert step is not None and step >= 2
    with TestClient(create_app(ServerSettings())) as second:
        resumed = wait_step(second, step + 1)
        assert resumed["state"]["job"] == job["id"]
        losses = second.get(f"/api/jobs/{job['id']}/progress").json()["training"]["losses"]
        assert losses[0][0] == step + 1  # went on from the saved step
        second.post(f"/api/jobs/{job['id']}/cancel")
        assert wait_job(second, job["id"])["status"] == "interrupted"

    # A crash leaves a job `running`: at the next start it is queued again and goes on from the file.
    before = load_embedding(path).step
    assert before is not None and before > step
    store = JobStore(home() / "server.db")
    crashed = store.submit({"kind": "embedding", "name": "persist", "data": str(faces), "steps": before + 3,
                            "preview_every": 0, "save_every": 0}, kind="train")
    assert store.claim_next(timeout=0) is not None
    store.close()
    with TestClient(create_app(ServerSettings())) as third:
        ended = wait_job(third, crashed.id)
        assert ended["status"] == "done" and ended["attempts"] == 2 and "retried" in ended["note"]
        assert ended["result"]["step"] == before + 3 and load_embedding(path).step == before + 3


OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    params TEXT NOT NULL, keep INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    note TEXT, result TEXT, created REAL NOT NULL, started REAL, finished REAL);
CREATE INDEX jobs_status ON jobs (status, seq);
"""


def test_an_old_database_gets_job_kinds(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO jobs (id, status, params, created) VALUES ('old', 'done', '{\"prompt\": \"x\"}', 1.0)")
    db.commit()
    db.close()
    store = JobStore(path)
    old = store.get("old")
    assert old is not None and old.kind == "generate" and old.public()["kind"] == "generate"
    new = store.submit({"kind": "embedding"}, kind="train")
    assert new.kind == "train" and new.public()["result"] is None
    with pytest.raises(ValueError, match="kind"):
        store.submit({}, kind="bogus")  # not a job kind ("merge" became one)
    store.close()
    JobStore(path).close()  # opening it again changes nothing
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")]
    assert columns.count("kind") == 1

"""An interrupted A1111 txt2img/img2img answers, as A1111 does, with the images finished so far
and the batch being sampled as far as it got (its latest prediction decoded by the VAE)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emaki.engine.run import GenerationProgress
from emaki.infotext import infotext_of
from emaki.jobs.worker import Worker
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

BODY = {"prompt": "1girl, red hair", "steps": 6, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5,
        "n_iter": 3}
INTERRUPT_AT = (1, 2)  # the second image (batch 1), after its second step


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A server whose worker interrupts its job after step 2 of the second batch, every time."""
    progress = Worker._on_progress

    def interrupting(worker: Worker, update: GenerationProgress) -> None:
        progress(worker, update)
        if (update.batch, update.step) == INTERRUPT_AT:
            worker.interrupt_job()  # what POST /sdapi/v1/interrupt does

    monkeypatch.setattr(Worker, "_on_progress", interrupting)
    with TestClient(create_app(ServerSettings(workspace=Workspace(tmp_path / "home")))) as test_client:
        yield test_client


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_an_interrupted_txt2img_answers_the_finished_image_and_the_partly_denoised_one(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json=BODY)
    assert answer.status_code == 200, answer.text
    images, info = answer.json()["images"], json.loads(answer.json()["info"])
    assert len(images) == 2 and info["all_seeds"] == [5, 6] and len(info["infotexts"]) == 2
    first, partial = decoded(images[0]), decoded(images[1])
    assert partial.size == (64, 64) and "Seed: 6" in (infotext_of(partial) or "") and "Seed: 6" in info["infotexts"][1]
    assert [job["status"] for job in client.get("/api/jobs").json()] == ["interrupted"]
    # The same seeds uninterrupted (one image each, so the interrupt never comes): the first is
    # the finished image, the second differs from the partly denoised one.
    alone = [decoded(client.post("/sdapi/v1/txt2img", json=BODY | {"seed": seed, "n_iter": 1}).json()["images"][0])
             for seed in (5, 6)]
    assert first.tobytes() == alone[0].tobytes()
    assert partial.tobytes() != alone[1].tobytes()


def test_a_saved_interrupted_request_keeps_only_finished_images_in_the_gallery(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json=BODY | {"save_images": True})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 2
    gallery = client.get("/api/gallery").json()
    assert [row["seed"] for row in gallery] == [5]  # the unfinished picture is not written


def test_an_interrupted_img2img_answers_the_partly_denoised_image_too(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode("ascii")
    answer = client.post("/sdapi/v1/img2img", json=BODY | {"init_images": [init], "denoising_strength": 1.0})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 2 and json.loads(answer.json()["info"])["all_seeds"] == [5, 6]

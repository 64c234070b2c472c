"""A1111's "SD upscale" script as a queued job: `/sdapi/v1/progress` counts its tiles while it
runs, `/sdapi/v1/interrupt` answers with the picture of the tiles finished, `save_images` puts
it in the gallery (in-process server, demo model)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from png_payload import png64

from emaki.server import ServerSettings, create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def face() -> Image.Image:
    from emaki.demo.faces import FaceAttributes, draw_face

    return draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).resize((64, 64)).convert("RGB")


def request(**fields: Any) -> dict[str, Any]:
    # Lanczos (index 1) × 4: 256x256 in 16 tiles of 64x64 without overlap.
    return {"init_images": [png64(face())], "prompt": "1girl, blue hair", "seed": 3, "steps": 6, "width": 64,
            "height": 64, "denoising_strength": 0.6, "sampler_name": "Euler", "script_name": "SD upscale",
            "script_args": ["", 0, 1, 4]} | fields


def test_progress_counts_tiles_and_interrupt_keeps_the_finished_ones(client: TestClient) -> None:
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(client.post("/sdapi/v1/img2img", json=request())))
    worker.start()
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 60  # a hang guard
    while time.monotonic() < deadline and not any(job_no >= 2 for job_no, _ in seen):
        state = client.get("/sdapi/v1/progress?skip_current_image=true").json()["state"]
        if state["job"]:
            seen.add((state["job_no"], state["sampling_steps"]))
        time.sleep(0.01)
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    worker.join(120)
    assert {job_no for job_no, _ in seen} >= {2}  # the third tile was running: progress moves by tiles
    reply = answers[0]
    assert reply.status_code == 200, reply.text
    body = reply.json()
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"), dtype=np.int16)
    upscaled = np.asarray(face().resize((256, 256), Image.Resampling.LANCZOS), dtype=np.int16)
    assert picture.shape == (256, 256, 3)
    assert np.abs(picture[:64, :64] - upscaled[:64, :64]).mean() > 2  # the first tile was redrawn
    assert np.array_equal(picture[128:], upscaled[128:])  # the tiles after the interrupt stay as upscaled
    assert "SD upscale upscaler: Lanczos" in json.loads(body["info"])["infotexts"][0]
    jobs = client.get("/api/jobs").json()
    listed = jobs["jobs"] if isinstance(jobs, dict) else jobs
    assert listed[0]["kind"] == "sd-upscale" and listed[0]["status"] == "interrupted"


def test_saved_pictures_go_to_the_gallery(client: TestClient) -> None:
    reply = client.post("/sdapi/v1/img2img", json=request(script_args=["", 0, 1, 2], steps=2, save_images=True))
    assert reply.status_code == 200, reply.text
    jobs = client.get("/api/jobs").json()
    job = (jobs["jobs"] if isinstance(jobs, dict) else jobs)[0]
    assert job["kind"] == "sd-upscale" and job["status"] == "done"
    images = client.get(f"/api/jobs/{job['id']}").json()["images"]
    assert len(images) == 1
    saved = Image.open(io.BytesIO(client.get(images[0]["url"]).content))
    assert saved.size == (128, 128) and "SD upscale overlap: 0" in saved.info["parameters"]


def test_native_sd_upscale_job(client: TestClient) -> None:
    from job_waiting import wait_job

    params = {"init_image": png64(face()), "prompt": "1girl", "seed": 3, "steps": 2, "width": 64, "height": 64,
              "denoising_strength": 0.5, "sampler_name": "Euler"}
    job = client.post("/api/sd-upscale", json={"params": params, "upscaler": "Lanczos", "scale": 2, "overlap": 16})
    assert job.status_code == 202, job.text
    assert job.json()["kind"] == "sd-upscale"
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "done", done
    saved = Image.open(io.BytesIO(client.get(done["images"][0]["url"]).content))
    assert saved.size == (128, 128) and "SD upscale overlap: 16" in saved.info["parameters"]
    for bad, word in (({"params": {"prompt": "x"}}, "init_image"),
                      ({"params": params, "upscaler": "Latent"}, "latents"),
                      ({"params": params, "overlap": 64}, "overlap"),
                      ({"params": params, "upscaler": "4x-Nothing"}, "upscaler")):
        refused = client.post("/api/sd-upscale", json=bad)
        assert refused.status_code == 422 and word in refused.json()["detail"], refused.text

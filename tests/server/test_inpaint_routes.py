"""Inpainting through both APIs (A1111's `mask` on `/sdapi/v1/img2img`, the native job's
base64 `mask`), RGBA init images on the A1111 route, hires fix with an upscaler model file, and
the 404 of unknown `/sdapi/v1` routes (in-process server, demo model, 64x64, few steps)."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image
from png_payload import png64
from upscalers.conftest import esrgan_state, write_model

from emaki.server import ServerSettings, create_app
from emaki.workspace import default_home

FAST = {"steps": 3, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def picture(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))


def face() -> Image.Image:
    from emaki.demo.faces import FaceAttributes, draw_face

    return draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).resize((64, 64)).convert("RGB")


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    return mask


def test_a1111_img2img_with_a_mask_repaints_only_the_masked_half(client: TestClient) -> None:
    init = face()
    request = {"init_images": [png64(init)], "mask": png64(right_half_mask()), "prompt": "1girl, blue hair",
               "denoising_strength": 1.0, "mask_blur": 0, "inpainting_fill": 2, "inpaint_full_res": False, **FAST}
    response = client.post("/sdapi/v1/img2img", json=request)
    assert response.status_code == 200, response.text
    result, original = picture(response.json()), np.asarray(init)
    assert np.array_equal(result[:, :28], original[:, :28])  # kept pixel for pixel
    assert not np.array_equal(result[:, 36:], original[:, 36:])  # repainted
    infotext = json.loads(response.json()["info"])["infotexts"][0]
    assert "Masked content: latent noise" in infotext  # A1111 leaves out a blur of 0
    assert response.json()["parameters"]["mask"] is None  # include_init_images is false

    inverted = client.post("/sdapi/v1/img2img", json=request | {"inpainting_mask_invert": 1}).json()
    flipped = picture(inverted)
    assert np.array_equal(flipped[:, 36:], original[:, 36:]) and not np.array_equal(flipped[:, :28], original[:, :28])
    assert "Mask mode: Inpaint not masked" in json.loads(inverted["info"])["infotexts"][0]


def test_a1111_rgba_init_without_mask_is_flattened_on_white(client: TestClient) -> None:
    """A1111 lays a transparent init image on white; its alpha is not a mask on this API."""
    rgba = face().convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    alpha.paste(0, (0, 0, 64, 20))
    rgba.putalpha(alpha)
    flat = Image.alpha_composite(Image.new("RGBA", (64, 64), "white"), rgba).convert("RGB")
    request = {"prompt": "1girl", "denoising_strength": 0.5, **FAST}
    from_rgba = client.post("/sdapi/v1/img2img", json=request | {"init_images": [png64(rgba)]})
    from_flat = client.post("/sdapi/v1/img2img", json=request | {"init_images": [png64(flat)]})
    assert from_rgba.status_code == 200, from_rgba.text
    assert np.array_equal(picture(from_rgba.json()), picture(from_flat.json()))


def test_native_job_mask_is_an_image_never_a_path(client: TestClient) -> None:
    init = face()
    refused = client.post("/api/jobs", json={"init_image": png64(init), "mask": "/etc/passwd", "prompt": "x"})
    assert refused.status_code == 422 and "mask" in refused.text
    alone = client.post("/api/jobs", json={"mask": png64(right_half_mask()), "prompt": "x"})
    assert alone.status_code == 422 and "init_image" in alone.text
    inputs = default_home(os.environ) / "inputs"
    assert not inputs.exists() or not list(inputs.iterdir())  # nothing kept for refused requests

    job = client.post("/api/jobs", json={"init_image": png64(init), "mask": png64(right_half_mask()),
                                         "prompt": "1girl, blue hair", "denoising_strength": 1.0, "mask_blur": 0,
                                         **FAST})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "done", done
    result = np.asarray(Image.open(io.BytesIO(client.get(done["images"][0]["url"]).content)).convert("RGB"))
    assert np.array_equal(result[:, :28], np.asarray(init)[:, :28])
    deadline = time.monotonic() + 10  # the init image and the mask go when the job ends
    while list(inputs.glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(inputs.glob("*.png")) == []


def test_hires_fix_with_an_upscaler_model_from_the_workspace(client: TestClient) -> None:
    write_model(esrgan_state(), default_home(os.environ) / "upscalers" / "4x-Tiny.safetensors")
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "4x-Tiny", "hr_second_pass_steps": 2,
             "denoising_strength": 0.4}
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST, **hires})
    assert response.status_code == 200, response.text
    assert picture(response.json()).shape == (128, 128, 3)
    assert "Hires upscaler: 4x-Tiny" in json.loads(response.json()["info"])["infotexts"][0]
    job = client.post("/api/jobs", json={"prompt": "1girl", **FAST, **hires})
    assert job.status_code == 202, job.text
    assert wait_job(client, job.json()["id"])["status"] == "done"


def test_restore_faces_names_the_missing_file(client: TestClient) -> None:
    for route, extra in (("txt2img", {}), ("img2img", {"init_images": [png64(face())]})):
        response = client.post(f"/sdapi/v1/{route}", json={"prompt": "1girl", "restore_faces": True, **FAST, **extra})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "restore_faces" in detail and "GFPGAN" in detail and "face-restorers" in detail


def test_unknown_sdapi_routes_answer_404(client: TestClient) -> None:
    for method, path in (("POST", "/sdapi/v1/interrogate"), ("GET", "/sdapi/v1/no-such-route"),
                         ("POST", "/sdapi/v1/no/such/route")):
        response = client.request(method, path, json={})
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.json() == {"detail": "Not Found"}
    assert client.get("/").status_code == 200  # the page is still served

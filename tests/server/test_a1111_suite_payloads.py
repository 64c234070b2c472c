"""The requests of A1111's own API test files (test/test_txt2img.py, test_img2img.py, test_extras.py,
test_utils.py): each answers 200 here, as it does from A1111 — except `restore_faces: true` on a
server without GFPGAN's files (this one has none): refused naming the files and the folder instead
of ignored (with the files it runs: tests/server/test_faces_refusal.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from png_payload import png64

from emaki.server import ServerSettings, create_app

INIT = png64(Image.new("RGB", (64, 64), (200, 120, 80)))
_mask = Image.new("L", (64, 64), 0)
ImageDraw.Draw(_mask).rectangle((16, 16, 48, 48), fill=255)
MASK = png64(_mask)

# The fields A1111's test requests send, with the values they send (-1 seed resize included).
COMMON: dict[str, Any] = {
    "batch_size": 1, "cfg_scale": 7, "eta": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
    "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
    "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
    "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64,
}
TXT2IMG = COMMON | {"denoising_strength": 0, "enable_hr": False, "firstphase_height": 0, "firstphase_width": 0}
IMG2IMG = COMMON | {
    "denoising_strength": 0.75, "include_init_images": False, "init_images": [INIT], "inpaint_full_res": False,
    "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
    "mask_blur": 4, "override_settings": {}, "resize_mode": 0,
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch, TestClient(create_app(ServerSettings())) as test_client:
        patch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset())  # fp32, as every server test
        yield test_client


@pytest.mark.parametrize("change", [
    {},
    {"negative_prompt": "example negative prompt"},
    {"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"},
    {"height": 128},
    {"enable_hr": True},
    {"tiling": True},
    {"sampler_index": "PLMS"},
    {"sampler_index": "DDIM"},
    {"sampler_index": "UniPC"},
    {"n_iter": 2},
    {"batch_size": 2},
], ids=str)
def test_a1111_txt2img_requests(client: TestClient, change: dict[str, Any]) -> None:
    answer = client.post("/sdapi/v1/txt2img", json=TXT2IMG | change)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == (TXT2IMG | change)["batch_size"] * (TXT2IMG | change)["n_iter"]


def test_restore_faces_is_refused_naming_what_is_missing(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json=TXT2IMG | {"restore_faces": True})
    assert answer.status_code == 422 and "restore_faces" in answer.text and "face-restorers" in answer.text


@pytest.mark.parametrize("change", [
    {},
    {"mask": MASK},
    {"mask": MASK, "inpainting_mask_invert": True},
    {"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]},
], ids=str)
def test_a1111_img2img_requests(client: TestClient, change: dict[str, Any]) -> None:
    answer = client.post("/sdapi/v1/img2img", json=IMG2IMG | change)
    assert answer.status_code == 200, answer.text
    assert answer.json()["images"]


def test_a1111_options_write_round_trips(client: TestClient) -> None:
    before = client.get("/sdapi/v1/options").json()["send_seed"]
    assert client.post("/sdapi/v1/options", json={"send_seed": not before}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["send_seed"] is (not before)
    assert client.post("/sdapi/v1/options", json={"send_seed": before}).status_code == 200


@pytest.mark.parametrize("route", ["cmd-flags", "samplers", "upscalers", "sd-models", "hypernetworks",
                                   "face-restorers", "realesrgan-models", "prompt-styles", "embeddings"])
def test_a1111_listing_routes(client: TestClient, route: str) -> None:
    assert client.get(f"/sdapi/v1/{route}").status_code == 200


@pytest.mark.parametrize("body", [
    {"resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
     "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
     "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0},
    {},
    {"model": "clip"},
], ids=["upscale", "defaults", "an-interrogate-field"])
def test_a1111_extras_requests(client: TestClient, body: dict[str, Any]) -> None:
    answer = client.post("/sdapi/v1/extra-single-image", json=body | {"image": INIT})
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(base64.b64decode(answer.json()["image"]))).size[0] >= 64

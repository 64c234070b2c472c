"""A1111's extras and upscaler routes, the SD upscale script, and the native `/api/upscalers`
and `/api/upscale` (in-process server; a tiny ESRGAN file in the workspace; the real `webuiapi`
client against a live server)."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from upscalers.conftest import esrgan_state, write_model

from emaki.server import ServerSettings, create_app
from emaki.workspace import default_home


@pytest.fixture
def client() -> Iterator[TestClient]:
    write_model(esrgan_state(), default_home(os.environ) / "upscalers" / "4x-Tiny.safetensors")
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def png64(image: Image.Image, parameters: str | None = None) -> str:
    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def opened(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[-1])))


def gradient(width: int = 32, height: int = 24) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8), "RGB")


def test_upscaler_listings_in_a1111_shapes(client: TestClient) -> None:
    rows = client.get("/sdapi/v1/upscalers").json()
    assert [row["name"] for row in rows] == ["None", "Lanczos", "Nearest", "4x-Tiny"]
    assert all(set(row) == {"name", "model_name", "model_path", "model_url", "scale"} for row in rows)
    assert rows[3]["scale"] == 4 and rows[3]["model_path"].endswith("4x-Tiny.safetensors")
    modes = client.get("/sdapi/v1/latent-upscale-modes").json()
    assert {"name": "Latent"} in modes and {"name": "Latent (nearest-exact)"} in modes
    realesrgan = client.get("/sdapi/v1/realesrgan-models").json()
    assert {"name": "R-ESRGAN 4x+", "path": None, "scale": 4} in realesrgan
    assert client.get("/sdapi/v1/face-restorers").json() == []
    native = client.get("/api/upscalers").json()
    assert native[3]["name"] == "4x-Tiny" and native[3]["architecture"] == "ESRGAN"


def test_extra_single_image_by_scale_with_a_builtin_and_a_model(client: TestClient) -> None:
    source = png64(gradient(), parameters="1girl\nSteps: 3, Seed: 1")
    body = client.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "Lanczos",
                                                             "upscaling_resize": 2})
    assert body.status_code == 200, body.text
    reply = body.json()
    assert reply["html_info"] == "<div><p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p></div>"
    image = opened(reply["image"])
    assert image.size == (64, 48)
    assert image.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert image.info["parameters"] == "1girl\nSteps: 3, Seed: 1"  # the source's parameters stay

    blended = client.post("/sdapi/v1/extra-single-image", json={
        "image": source, "upscaler_1": "4x-Tiny", "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5,
        "upscaling_resize": 2}).json()
    assert opened(blended["image"]).size == (64, 48)
    assert "Postprocess upscaler: 4x-Tiny, Postprocess upscaler 2: Nearest" in blended["html_info"]


def test_extras_resize_to_a_size_with_crop_and_the_batch_route(client: TestClient) -> None:
    request = {"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 80, "upscaling_resize_h": 80,
               "upscaling_crop": True}
    body = client.post("/sdapi/v1/extra-batch-images", json={
        **request, "imageList": [{"data": png64(gradient()), "name": "a.png"},
                                 {"data": png64(gradient(16, 16)), "name": "b.png"}]})
    assert body.status_code == 200, body.text
    reply = body.json()
    assert [opened(data).size for data in reply["images"]] == [(80, 80), (80, 80)]
    assert "Postprocess upscale to: 80x80, Postprocess crop to: 80x80" in reply["html_info"]
    nothing = client.post("/sdapi/v1/extra-single-image", json={"image": png64(gradient())}).json()
    assert opened(nothing["image"]).size == (32, 24)  # upscaler_1 None: A1111 skips the step


def test_extras_refusals(client: TestClient) -> None:
    source = png64(gradient())
    faces = client.post("/sdapi/v1/extra-single-image", json={"image": source, "gfpgan_visibility": 0.5})
    assert faces.status_code == 422 and "GFPGAN" in faces.json()["detail"]
    unknown = client.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "4x-Nothing"})
    assert unknown.status_code == 422 and "upscaler_1" in unknown.json()["detail"]
    missing = client.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "R-ESRGAN 4x+"})
    assert missing.status_code == 422 and "RealESRGAN_x4plus.pth" in missing.json()["detail"]
    assert client.post("/sdapi/v1/extra-single-image", json={"image": "???"}).status_code == 422
    assert client.post("/sdapi/v1/extra-batch-images", json={"imageList": []}).status_code == 422


def test_extras_wait_for_the_engine(client: TestClient) -> None:
    """An upscale does not run while a generation holds the engine (one model user at a time)."""
    engine = client.app.state.service.engine
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(client.post("/api/upscale", json={
        "image": png64(gradient()), "upscaler": "4x-Tiny", "scale": 2}).status_code))
    with engine._running:
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not answers  # waiting on the engine
    worker.join(60)
    assert answers == [200]


def test_native_upscale(client: TestClient) -> None:
    reply = client.post("/api/upscale", json={"image": "data:image/png;base64," + png64(gradient()),
                                              "upscaler": "4x-Tiny", "scale": 2})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["image"].startswith("data:image/png;base64,") and (body["width"], body["height"]) == (64, 48)
    assert opened(body["image"]).size == (64, 48) and "4x-Tiny" in body["infotext"]
    latent = client.post("/api/upscale", json={"image": png64(gradient()), "upscaler": "Latent"})
    assert latent.status_code == 422


def test_sd_upscale_script(client: TestClient) -> None:
    from emaki.demo.faces import FaceAttributes, draw_face

    init = draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).resize((64, 64))
    assert "sd upscale" in client.get("/sdapi/v1/scripts").json()["img2img"]
    response = client.post("/sdapi/v1/img2img", json={
        "init_images": [png64(init)], "prompt": "1girl", "seed": 3, "steps": 2, "width": 64, "height": 64,
        "denoising_strength": 0.3, "sampler_name": "Euler", "script_name": "SD upscale",
        "script_args": ["", 16, 1, 2]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert opened(body["images"][0]).size == (128, 128)
    info = json.loads(body["info"])
    assert info["seed"] == 3
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in info["infotexts"][0]
    assert "Size: 64x64" in info["infotexts"][0]  # the tile's, as A1111 writes it
    bad = client.post("/sdapi/v1/img2img", json={"init_images": [png64(init)], "script_name": "SD upscale",
                                                  "script_args": ["", 16, 99, 2], "width": 64, "height": 64})
    assert bad.status_code == 422 and "upscaler index 99" in bad.json()["detail"]
    other = client.post("/sdapi/v1/img2img", json={"init_images": [png64(init)], "script_name": "Loopback"})
    assert other.status_code == 422 and "script_name" in other.json()["detail"]


def test_webuiapi_extra_single_image(live_server, tmp_path: Path) -> None:
    api = webuiapi.WebUIApi(host="127.0.0.1", port=live_server.port)
    result = api.extra_single_image(gradient(), upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (64, 48)
    assert api.get_upscalers()[0]["name"] == "None"

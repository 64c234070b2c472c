"""Limits the 2048² size rule does not cover (issue 16, item 12): every out-of-range, non-finite,
oversized or bomb input is a 4xx naming the field (422, or 413 for an image too large to decode)
before anything is queued or decoded — never a 500, never gigabytes of memory.

The worker does not run here: a request that is (wrongly) accepted is queued and answered at
once, so a missing check fails the test instead of running a huge job."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app
from emaki.workspace import default_home

FAST = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64}
MAX_PROMPT = 32_768


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    app = create_app(ServerSettings(run_worker=False))

    async def at_once(job_id: str, timeout: float | None = None) -> Any:  # an accepted A1111 request answers now
        return app.state.service.store.get(job_id)

    with TestClient(app, raise_server_exceptions=False) as test_client:
        monkeypatch.setattr(app.state.waiters, "wait", at_once)
        yield test_client


def post(client: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` as JSON, NaN and Infinity included (Python's JSON reader accepts them)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def refused(response: httpx.Response, field: str, status: int = 422) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert field in response.text, response.text[:500]
    assert len(response.content) < 4000, "the refusal must not echo the whole input"
    return response.text


def png_bomb(width: int, height: int) -> str:
    """A 1-bit PNG of `width`x`height` black pixels, base64: a few KB declaring width×height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 20) // len(row))
    data = b"".join(packer.compress(row * min(rows_per_piece, height - y)) for y in range(0, height, rows_per_piece))
    data += packer.flush()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
           + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


@pytest.fixture(scope="module")
def bombs() -> dict[str, str]:
    return {"13000x13000": png_bomb(13000, 13000), "20000x20000": png_bomb(20000, 20000)}


@pytest.mark.parametrize("size", ["13000x13000", "20000x20000"])
@pytest.mark.parametrize("path, field, body", [
    ("/sdapi/v1/img2img", "init_images", lambda image: FAST | {"init_images": [image]}),
    ("/api/jobs", "init_image", lambda image: FAST | {"init_image": image}),
    ("/sdapi/v1/png-info", "image", lambda image: {"image": image}),
    ("/api/png-info", "image", lambda image: {"image": image}),
])
def test_an_image_too_large_to_decode_is_413_from_its_header(client: TestClient, bombs: dict[str, str], size: str,
                                                              path: str, field: str, body: Any) -> None:
    text = refused(post(client, path, body(bombs[size])), field, status=413)
    assert size in text or "decompression bomb" in text
    assert client.get("/api/jobs").json() == []


def test_seed_resize_is_bounded(client: TestClient) -> None:
    refused(post(client, "/sdapi/v1/txt2img", FAST | {"seed_resize_from_w": 1e9, "seed_resize_from_h": 512}),
            "seed_resize_from_w")
    refused(post(client, "/sdapi/v1/txt2img", FAST | {"seed_resize_from_w": 120000, "seed_resize_from_h": 120000}),
            "seed_resize_from_w")
    refused(post(client, "/api/jobs", FAST | {"seed_resize_from_w": 4096, "seed_resize_from_h": 4096}),
            "seed_resize_from_w/h")  # each side allowed, the area is not
    assert client.get("/api/jobs").json() == []
    assert post(client, "/api/jobs", FAST | {"seed_resize_from_w": 512, "seed_resize_from_h": 768}).status_code == 202


def test_the_hires_target_is_bounded_like_the_image(client: TestClient) -> None:
    hires = {"enable_hr": True, "denoising_strength": 0.5}
    refused(post(client, "/sdapi/v1/txt2img", FAST | hires | {"hr_scale": 8, "width": 2048, "height": 2048}),
            "hr_scale")
    refused(post(client, "/sdapi/v1/txt2img", FAST | hires | {"hr_resize_x": 4096, "width": 64, "height": 512}),
            "hr_resize_x")  # the height follows the aspect ratio: 32768
    refused(post(client, "/api/jobs", {"prompt": "1girl"} | hires | {"hr_scale": 8}), "hr_scale")  # the model's size
    assert client.get("/api/jobs").json() == []
    fits = post(client, "/sdapi/v1/txt2img", FAST | hires | {"hr_scale": 2, "width": 1024, "height": 1024})
    assert fits.status_code == 200, fits.text


def test_token_counter_steps_and_prompt_are_bounded(client: TestClient) -> None:
    refused(post(client, "/api/tokens", {"prompt": "[a:b:0.5] cat", "steps": 10**7}), "steps")
    text = refused(post(client, "/api/tokens", {"prompt": "a " * 100_000}), "prompt")
    assert str(MAX_PROMPT) in text
    assert post(client, "/api/tokens", {"prompt": "a cat", "steps": 1000}).status_code == 200


def test_a_training_preview_prompt_over_the_limit_is_refused(client: TestClient) -> None:
    body = {"embedding_name": "e", "data_root": "/nowhere", "steps": 2, "preview_prompt": "cat, " * 100_000}
    text = refused(post(client, "/sdapi/v1/train/embedding", body), "preview_prompt")
    assert f"{MAX_PROMPT}" in text


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"])
def test_prompts_over_the_limit_are_refused_up_front(client: TestClient, field: str) -> None:
    hires = {"enable_hr": True, "hr_scale": 1.5}
    for path in ("/api/jobs", "/sdapi/v1/txt2img"):
        text = refused(post(client, path, FAST | hires | {field: "masterpiece, " * 80_000}), field)  # ~1 MB
        assert str(MAX_PROMPT) in text or f"{MAX_PROMPT:,}" in text
    assert client.get("/api/jobs").json() == []
    at_limit = post(client, "/api/jobs", FAST | hires | {field: ("1girl, " * MAX_PROMPT)[:MAX_PROMPT]})
    assert at_limit.status_code == 202, at_limit.text[:300]


A1111_INTEGERS = ["seed", "subseed", "batch_size", "n_iter", "steps", "width", "seed_resize_from_w",
                  "hr_second_pass_steps", "hr_resize_x"]


@pytest.mark.parametrize("path, field", [("/sdapi/v1/txt2img", field) for field in A1111_INTEGERS]
                         + [("/api/jobs", field) for field in [*A1111_INTEGERS, "clip_skip", "eta_noise_seed_delta"]])
def test_big_integers_are_422_naming_the_field(client: TestClient, path: str, field: str) -> None:
    hires = {"enable_hr": True}
    refused(post(client, path, FAST | hires | {field: 10**40}), field)
    refused(post(client, path, FAST | hires | {field: 1e300}), field)
    assert client.get("/api/jobs").json() == []


A1111_FLOATS = ["eta", "s_noise", "s_churn", "s_tmin", "s_tmax", "s_min_uncond", "subseed_strength",
                "denoising_strength", "cfg_scale", "hr_scale", "refiner_switch_at"]
NATIVE_FLOATS = ["eta", "s_noise", "subseed_strength", "denoising_strength", "cfg_scale", "hr_scale",
                 "hypernetwork_strength"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, value: float) -> None:
    hires = {"enable_hr": True}
    for path, fields in (("/sdapi/v1/txt2img", A1111_FLOATS), ("/api/jobs", NATIVE_FLOATS),
                         ("/sdapi/v1/img2img", ["image_cfg_scale", "initial_noise_multiplier"])):
        for field in fields:
            refused(post(client, path, FAST | hires | {field: value}), field)
    refused(post(client, "/sdapi/v1/create/hypernetwork", {"name": "h", "layer_structure": [1, value, 1]}),
            "layer_structure")
    assert client.get("/api/jobs").json() == []  # nothing JSON cannot carry is stored


def test_options_are_checked_by_the_fields_they_fill(client: TestClient) -> None:
    refused(post(client, "/sdapi/v1/options", {"eta_noise_seed_delta": 1e300}), "eta_noise_seed_delta")
    refused(post(client, "/sdapi/v1/options", {"eta_noise_seed_delta": 10**40}), "eta_noise_seed_delta")
    refused(post(client, "/sdapi/v1/options", {"sd_hypernetwork_strength": float("nan")}), "sd_hypernetwork_strength")
    refused(post(client, "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 99}), "CLIP_stop_at_last_layers")
    refused(post(client, "/sdapi/v1/options", {"randn_source": "quantum"}), "randn_source")
    refused(post(client, "/sdapi/v1/txt2img", FAST | {"override_settings": {"eta_noise_seed_delta": 1e300}}),
            "eta_noise_seed_delta")
    options = client.get("/sdapi/v1/options").json()
    assert options["eta_noise_seed_delta"] == 0 and options["sd_hypernetwork_strength"] == 1.0
    assert post(client, "/sdapi/v1/options", {"eta_noise_seed_delta": "31337"}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 31337
    assert post(client, "/sdapi/v1/txt2img", FAST).status_code == 200


def test_bad_saved_options_are_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    home = default_home(os.environ)
    home.mkdir(parents=True, exist_ok=True)
    (home / "server-options.json").write_text(
        '{"eta_noise_seed_delta": 1e300, "CLIP_stop_at_last_layers": 2, "sd_hypernetwork_strength": NaN}')
    with caplog.at_level(logging.WARNING), TestClient(create_app(ServerSettings(run_worker=False))) as client:
        options = client.get("/sdapi/v1/options").json()
        assert (options["eta_noise_seed_delta"], options["CLIP_stop_at_last_layers"],
                options["sd_hypernetwork_strength"]) == (0, 2, 1.0)
        assert post(client, "/api/jobs", FAST).status_code == 202
    logged = caplog.text
    assert "eta_noise_seed_delta" in logged and "sd_hypernetwork_strength" in logged


def test_gallery_and_image_numbers_beyond_sqlite_are_4xx(client: TestClient) -> None:
    assert client.get("/api/gallery", params={"offset": 10**40}).status_code == 422
    assert client.get(f"/api/images/{10**40}").status_code == 404
    assert client.get(f"/api/images/{10**40}/params").status_code == 404


def test_a_nan_stored_by_an_older_emaki_reads_as_null(client: TestClient) -> None:
    """Jobs stored before floats were checked may hold NaN, which JSON cannot carry: it reads as null."""
    store = client.app.state.service.store  # type: ignore[attr-defined]
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO jobs (id, status, kind, params, keep, created) VALUES "
                   "('old', 'done', 'generate', '{\"prompt\": \"x\", \"eta\": NaN, \"cfg_scale\": Infinity}', 1, 0)")

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in a JSON answer")

    with client.stream("GET", "/api/jobs/old/events") as stream:  # the page's event stream: json.dumps
        data = next(line for line in stream.iter_lines() if line.startswith("data: "))
    ended = json.loads(data.removeprefix("data: "), parse_constant=no_constants)
    assert ended["params"] == {"prompt": "x", "eta": None, "cfg_scale": None}
    for path in ("/api/jobs/old", "/api/jobs"):
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        json.loads(answer.text, parse_constant=no_constants)

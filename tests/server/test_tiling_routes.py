"""`tiling` through both APIs: A1111's `/sdapi/v1/txt2img` field (null is off) and the native
job's field, both recorded as `Tiling: True` (in-process server, demo model, 64x64, few steps)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.server import ServerSettings, create_app

FAST = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 5}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_a1111_tiling_field(client: TestClient) -> None:
    tiled = client.post("/sdapi/v1/txt2img", json={**FAST, "tiling": True})
    assert tiled.status_code == 200, tiled.text
    assert "Tiling: True" in json.loads(tiled.json()["info"])["infotexts"][0]
    for off in (None, False):
        plain = client.post("/sdapi/v1/txt2img", json={**FAST, "tiling": off})
        assert plain.status_code == 200, plain.text
        assert "Tiling" not in json.loads(plain.json()["info"])["infotexts"][0]
    from_infotext = client.post("/sdapi/v1/txt2img", json={
        "infotext": "1girl\nSteps: 2, Sampler: Euler, Seed: 5, Size: 64x64, Tiling: True"})
    assert from_infotext.status_code == 200, from_infotext.text
    assert "Tiling: True" in json.loads(from_infotext.json()["info"])["infotexts"][0]


def test_native_job_tiling_field(client: TestClient) -> None:
    job = client.post("/api/jobs", json={**FAST, "tiling": True})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "done", done
    image = Image.open(io.BytesIO(client.get(done["images"][0]["url"]).content))
    assert "Tiling: True" in image.info["parameters"]

"""Scripts over A1111's API (in-process, demo model): `alwayson_scripts` for scripts emaki does
not have refused naming them, empty entries accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app

FAST = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_alwayson_scripts_emaki_lacks_are_422_naming_them(client: TestClient) -> None:
    body = {"prompt": "1girl", **FAST,
            "alwayson_scripts": {"controlnet": {"args": [{"enabled": True}]}, "ADetailer": {"args": []}}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422 and "controlnet" in response.text, response.text
    assert "ADetailer" not in response.text  # an empty entry asks for nothing
    assert client.get("/api/jobs").json() == []


def test_empty_alwayson_scripts_are_accepted(client: TestClient) -> None:
    for scripts in ({}, {"ADetailer": {"args": []}, "Refiner": {}}):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST, "alwayson_scripts": scripts})
        assert response.status_code == 200, (scripts, response.text)
        assert len(response.json()["images"]) == 1

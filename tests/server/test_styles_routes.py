"""Styles over HTTP (in-process, demo model): A1111's `styles` field and `/sdapi/v1/prompt-styles`,
the native `/api/jobs` `styles` and `/api/styles` editor routes, and the prompt policy judging
the styled prompt at submission."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app

FAST = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5}
STYLES = 'name,prompt,negative_prompt\r\nframe,"masterpiece, {prompt}",lowres\r\ntag,anime,\r\nbad,"loli, nude",\r\n'


@pytest.fixture
def styles_file() -> Path:
    path = Path(os.environ["EMAKI_HOME"]) / "styles.csv"
    path.write_text(STYLES, encoding="utf-8")
    return path


@pytest.fixture
def client(styles_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_prompt_styles_lists_the_workspace_styles_in_a1111_shape(client: TestClient) -> None:
    listed = client.get("/sdapi/v1/prompt-styles").json()
    assert listed == [{"name": "frame", "prompt": "masterpiece, {prompt}", "negative_prompt": "lowres"},
                      {"name": "tag", "prompt": "anime", "negative_prompt": ""},
                      {"name": "bad", "prompt": "loli, nude", "negative_prompt": ""}]


def test_a1111_styles_are_applied_and_recorded(client: TestClient) -> None:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "styles": ["frame", "tag"], **FAST})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["styles"] == ["frame", "tag"]
    assert info["infotexts"][0].startswith("masterpiece, 1girl, anime\nNegative prompt: lowres")


def test_native_job_styles_are_applied(client: TestClient) -> None:
    response = client.post("/api/jobs", json={"prompt": "1girl", "styles": ["tag"], "save": True, **FAST})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    for _ in range(600):
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["status"] == "done" and job["images"][0]["infotext"].startswith("1girl, anime\n")


def test_an_unknown_style_is_422_naming_it_on_both_apis(client: TestClient) -> None:
    for path in ("/sdapi/v1/txt2img", "/api/jobs"):
        response = client.post(path, json={"prompt": "1girl", "styles": ["nope"], **FAST})
        assert response.status_code == 422 and "nope" in response.text, (path, response.text)
    assert client.get("/api/jobs").json() == []


def test_the_policy_judges_the_styled_prompt_at_submission(client: TestClient) -> None:
    for path in ("/sdapi/v1/txt2img", "/api/jobs"):
        response = client.post(path, json={"prompt": "1girl", "styles": ["bad"], **FAST})
        assert response.status_code == 400 and response.json()["error"] == "PolicyViolation", (path, response.text)
    assert client.get("/api/jobs").json() == []


def test_native_styles_routes_save_replace_and_delete(client: TestClient, styles_file: Path) -> None:
    assert [s["name"] for s in client.get("/api/styles").json()] == ["frame", "tag", "bad"]
    saved = client.put("/api/styles/new one", json={"prompt": "watercolor, {prompt}", "negative_prompt": "blurry"})
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"name": "new one", "prompt": "watercolor, {prompt}", "negative_prompt": "blurry"}
    client.put("/api/styles/tag", json={"prompt": "manga"})
    listed = {s["name"]: s for s in client.get("/sdapi/v1/prompt-styles").json()}
    assert listed["new one"]["negative_prompt"] == "blurry" and listed["tag"]["prompt"] == "manga"
    assert client.get("/api/styles/tag").json()["prompt"] == "manga"
    assert client.delete("/api/styles/frame").status_code == 204
    assert "frame" not in styles_file.read_text(encoding="utf-8")
    missing = client.delete("/api/styles/frame")
    assert missing.status_code == 404 and "frame" in missing.text
    assert client.get("/api/styles/frame").status_code == 404
    bad_name = client.put("/api/styles/%23comment", json={"prompt": "x"})
    assert bad_name.status_code == 422 and "#" in bad_name.text

"""The speed preset and NGMS over HTTP: `speed` on the native job and grid routes (as `emaki
generate --speed`: the fields a request sets win), `GET /api/speed/NAME` (what the page's Speed
menu fills in), and A1111's NGMS settings (`s_min_uncond`, "NGMS: Skip every step") filling the
A1111 request's fields as A1111 fills them. In-process server, demo model, 64x64, two steps."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from job_waiting import wait_job
from PIL import Image

from emaki.infotext import parse_infotext
from emaki.server import ServerSettings, create_app

FAST = {"prompt": "1girl", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 5}
SPEED_FIELDS = ("NGMS", "NGMS all steps", "Gate step", "Token merging ratio", "Token merging ratio hr", "Cache interval")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def job_speed_fields(client: TestClient, body: dict[str, Any]) -> dict[str, str]:
    """The speed fields of the infotext of the image a native job made."""
    job = client.post("/api/jobs", json=body)
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "done", done
    image = Image.open(io.BytesIO(client.get(done["images"][0]["url"]).content))
    fields = parse_infotext(image.info["parameters"])
    return {name: fields[name] for name in SPEED_FIELDS if name in fields}


def test_the_preset_route_says_what_each_preset_sets(client: TestClient) -> None:
    fast = client.get("/api/speed/fast", params={"steps": 8})
    assert fast.status_code == 200, fast.text
    assert fast.json() == {"s_min_uncond": 4.0, "s_min_uncond_all": True, "cache_interval": 0, "gate_step": 4,
                           "token_merging_ratio": 0.5, "token_merging_ratio_hr": 0.0}
    assert client.get("/api/speed/exact").json()["token_merging_ratio"] == 0.0
    unknown = client.get("/api/speed/turbo")
    assert unknown.status_code == 422 and "speed: expected exact or fast" in unknown.json()["detail"], unknown.text


def test_a_job_runs_the_fast_preset_under_the_fields_it_sets(client: TestClient) -> None:
    assert job_speed_fields(client, {**FAST, "speed": "fast"}) == {
        "NGMS": "4", "NGMS all steps": "True", "Gate step": "1", "Token merging ratio": "0.5"}
    # A field the request sets wins over the preset, as `--speed fast --token-merging 0` on the CLI.
    assert job_speed_fields(client, {**FAST, "speed": "fast", "token_merging_ratio": 0, "gate_step": 2}) == {
        "NGMS": "4", "NGMS all steps": "True", "Gate step": "2"}
    wrong = client.post("/api/jobs", json={**FAST, "speed": "turbo"})
    assert wrong.status_code == 422 and "speed: expected exact or fast, got 'turbo'" in wrong.text, wrong.text


def test_exact_turns_off_what_the_settings_turn_on(client: TestClient) -> None:
    before = client.get("/sdapi/v1/options").json()
    changed = {"token_merging_ratio": 0.5, "s_min_uncond": 2.0, "token_merging_ratio_hr": 0.3}
    assert client.post("/sdapi/v1/options", json=changed).status_code == 200
    hires = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5}
    try:
        assert job_speed_fields(client, FAST) == {"NGMS": "2", "Token merging ratio": "0.5"}  # the settings'
        assert job_speed_fields(client, {**FAST, **hires})["Token merging ratio hr"] == "0.3"
        assert job_speed_fields(client, {**FAST, **hires, "speed": "exact"}) == {}
    finally:
        client.post("/sdapi/v1/options", json={key: before[key] for key in changed})


def test_a_grid_takes_the_preset_in_its_params(client: TestClient) -> None:
    job = client.post("/api/grid", json={"params": {**FAST, "speed": "fast"}, "x": "Seed: 1, 2", "save": False})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "done", done
    for infotext in done["result"]["infotexts"][1:]:  # the cells'
        assert "NGMS all steps: True" in infotext and "Token merging ratio: 0.5" in infotext, infotext


def test_a1111_settings_fill_ngms_as_a1111_does(client: TestClient) -> None:
    skip_every_step = {"s_min_uncond": 3.0, "s_min_uncond_all": True}
    made = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": skip_every_step})
    assert made.status_code == 200, made.text
    infotext = json.loads(made.json()["info"])["infotexts"][0]
    assert "NGMS: 3," in infotext and "NGMS all steps: True" in infotext, infotext
    # The request's own `s_min_uncond` wins over the setting; null (what clients send) takes it.
    own = client.post("/sdapi/v1/txt2img", json={**FAST, "s_min_uncond": 1.5, "override_settings": skip_every_step})
    assert "NGMS: 1.5," in json.loads(own.json()["info"])["infotexts"][0]
    null = client.post("/sdapi/v1/txt2img", json={**FAST, "s_min_uncond": None, "override_settings": skip_every_step})
    assert "NGMS: 3," in json.loads(null.json()["info"])["infotexts"][0]

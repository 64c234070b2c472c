"""LoRAs through the server (in-process, demo model): A1111's `/sdapi/v1/loras` and
`refresh-loras`, the native listings, `Lora hashes` in the images and `png-info`, and a missing
or unusable LoRA refused with its name before anything is queued."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tiny_lora import write_tiny_lora

from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

FAST = {"steps": 2, "width": 32, "height": 32, "sampler_name": "Euler a", "seed": 5}


@pytest.fixture
def loras() -> Path:
    folder = Path(os.environ["EMAKI_HOME"]) / "loras"
    write_tiny_lora(folder / "style.safetensors", alias="style-v1", tags={"silver hair": 5, "1girl": 9})
    write_tiny_lora(folder / "chars" / "plain.safetensors", seed=3)
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    return folder


@pytest.fixture
def client(loras: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings())) as test_client:
        yield test_client


def test_loras_listed_in_a1111_shape_and_refreshed(client: TestClient, loras: Path) -> None:
    listed = client.get("/sdapi/v1/loras").json()
    assert [(row["name"], row["alias"]) for row in listed] == [("plain", "plain"), ("style", "style-v1")]
    assert all(set(row) == {"name", "alias", "path", "metadata"} for row in listed)
    style = listed[1]
    assert style["path"] == str(loras / "style.safetensors")
    assert style["metadata"]["ss_output_name"] == "style-v1" and style["metadata"]["ss_network_dim"] == "2"
    assert style["metadata"]["ss_tag_frequency"] == {"10_subject": {"silver hair": 5, "1girl": 9}}  # parsed, as A1111

    write_tiny_lora(loras / "later.safetensors", seed=5)
    assert "later" not in [row["name"] for row in client.get("/sdapi/v1/loras").json()]  # listings are cached
    refreshed = client.post("/sdapi/v1/refresh-loras")
    assert refreshed.status_code == 200 and refreshed.json() is None
    assert [row["name"] for row in client.get("/sdapi/v1/loras").json()] == ["plain", "later", "style"]  # by path

    models = client.get("/api/models").json()
    assert models["loras"] == ["plain", "later", "style"]
    native = {row["name"]: row for row in client.get("/api/loras").json()}
    assert native["style"]["alias"] == "style-v1" and native["style"]["trigger_words"] == ["1girl", "silver hair"]
    assert native["style"]["kind"] == "lora" and native["style"]["rank"] == 2 and native["plain"]["trigger_words"] == []


def test_a1111_install_lora_and_lycoris_folders_are_listed(tmp_path: Path) -> None:
    webui = tmp_path / "webui"
    write_tiny_lora(webui / "models" / "Lora" / "from-lora.safetensors")
    write_tiny_lora(webui / "models" / "LyCORIS" / "from-lyco.safetensors", seed=9)
    with TestClient(create_app(ServerSettings(workspace=Workspace(tmp_path / "home", webui)))) as client:
        listed = client.get("/sdapi/v1/loras").json()
        assert [(row["name"], Path(row["path"]).parent.name) for row in listed] == [
            ("from-lora", "Lora"), ("from-lyco", "LyCORIS")]
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl <lyco:from-lyco:0.5>", **FAST})
        assert answer.status_code == 200, answer.text


def test_generating_with_a_lora_writes_lora_hashes_read_back_by_png_info(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl <lora:style-v1:0.8>", **FAST})
    assert answer.status_code == 200, answer.text
    infotext = json.loads(answer.json()["info"])["infotexts"][0]
    hashes = re.search(r'Lora hashes: "style-v1: ([0-9a-f]{12})"', infotext)
    assert hashes, infotext
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST}).json()
    assert answer.json()["images"][0] != plain["images"][0]

    image = answer.json()["images"][0]
    info = client.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert info["parameters"]["Lora hashes"] == f"style-v1: {hashes.group(1)}"
    native = client.post("/api/png-info", json={"image": image}).json()
    assert native["fields"]["Lora hashes"] == f"style-v1: {hashes.group(1)}"
    assert native["params"]["prompt"] == "1girl <lora:style-v1:0.8>"  # the tag re-applies it; no other field

    again = client.post("/sdapi/v1/txt2img", json={"infotext": infotext})
    assert again.status_code == 200, again.text
    assert again.json()["images"][0] == image


def test_a_missing_or_unusable_lora_is_refused_naming_it(client: TestClient, loras: Path) -> None:
    cases = [
        ("/sdapi/v1/txt2img", "1girl <lora:missing:1>", "prompt: no LoRA 'missing' in the LoRA folders"),
        ("/sdapi/v1/txt2img", "1girl <lyco:missing:0.5>", "prompt: no LoRA 'missing' in the LoRA folders"),
        ("/api/jobs", "1girl <lora:missing:1>", "prompt: no LoRA 'missing' in the LoRA folders"),
        ("/sdapi/v1/txt2img", "1girl <lora:../style:1>", "prompt: '../style' is a path"),
        ("/sdapi/v1/txt2img", "1girl <lora:broken:1>", "prompt: LoRA 'broken' ("),
        ("/sdapi/v1/txt2img", "loli, nude <lora:missing:1>", "Refused"),  # the policy judges first
    ]
    for route, prompt, message in cases:
        answer = client.post(route, json={"prompt": prompt, **FAST})
        assert answer.status_code == 400, (prompt, answer.text)
        assert message in answer.json()["detail"], (prompt, answer.text)
    assert client.get("/api/jobs").json() == []  # nothing was queued

    unknown = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl <lorra:style:1>", **FAST})
    assert unknown.status_code == 422 and "<lorra:...>" in unknown.json()["detail"]

    # A file added after the listing is found without a refresh (A1111 lists again on a miss).
    write_tiny_lora(loras / "fresh.safetensors", seed=11)
    fresh = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl <lora:fresh:1>", **FAST})
    assert fresh.status_code == 200, fresh.text
    image = Image.open(io.BytesIO(base64.b64decode(fresh.json()["images"][0])))
    assert 'Lora hashes: "fresh: ' in image.info["parameters"]

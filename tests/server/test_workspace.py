"""The server works on the workspace it was started with, not on the environment: an A1111
install's hypernetworks and embeddings are listed *and* usable, and images land in its home."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from emaki.networks import Embedding, Hypernetwork, save_embedding, save_hypernetwork
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

FAST = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a", "save_images": True}


def test_a1111_networks_listed_are_usable_and_images_land_in_the_servers_home(tmp_path: Path):
    webui, home = tmp_path / "webui", tmp_path / "server-home"
    g = torch.Generator().manual_seed(0)
    save_hypernetwork(Hypernetwork.create("webui-hn", (32, 64, 128), activation_func="relu", generator=g),
                      webui / "models" / "hypernetworks" / "webui-hn.pt")
    save_embedding(Embedding("webui-style", torch.randn(1, 128, generator=g)), webui / "embeddings" / "webui-style.pt")
    settings = ServerSettings(workspace=Workspace(home, webui))
    with TestClient(create_app(settings)) as client:
        assert client.get("/sdapi/v1/cmd-flags").json()["a1111"] == str(webui)
        listed = [row["name"] for row in client.get("/sdapi/v1/hypernetworks").json()]
        assert listed == ["webui-hn"]
        assert "webui-style" in client.get("/sdapi/v1/embeddings").json()["loaded"]
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl, webui-style <hypernet:webui-hn:0.8>", **FAST})
        assert answer.status_code == 200, answer.text
        option = client.post("/sdapi/v1/options", json={"sd_hypernetwork": "webui-hn"})
        assert option.status_code == 200, option.text
        assert client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", **FAST}).status_code == 200
    written = sorted((home / "outputs").rglob("*.png"))
    assert len(written) == 2
    assert not list(Path(os.environ["EMAKI_HOME"]).rglob("*.png"))  # nothing under the environment's home
    assert (home / "server.db").is_file()


def test_an_interrupted_a1111_request_returns_the_images_finished_so_far(tmp_path: Path):
    import threading
    import time

    with TestClient(create_app(ServerSettings(workspace=Workspace(tmp_path)))) as client:
        answer: dict = {}
        body = {"prompt": "1girl", "steps": 40, "n_iter": 4, "width": 64, "height": 64, "seed": 5}
        request = threading.Thread(target=lambda: answer.update(client.post("/sdapi/v1/txt2img", json=body).json()))
        request.start()
        deadline = time.monotonic() + 120
        while client.get("/sdapi/v1/progress").json()["state"]["job_no"] < 1:  # the second batch is running
            assert time.monotonic() < deadline and request.is_alive()
            time.sleep(0.05)
        client.post("/sdapi/v1/interrupt")
        request.join(120)
    assert 1 <= len(answer["images"]) < 4

"""A checkpoint written after the server listed its folders is found by name: a merge job is seen
as done a moment before its end refreshes the listing, and a user may copy a file in any time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from emaki.server import ServerSettings, create_app


def test_a_checkpoint_newer_than_the_listing_is_found_by_name(tiny_safetensors: Path) -> None:
    with TestClient(create_app(ServerSettings())) as client:
        listed = [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
        assert "fresh" not in listed
        folder = Path(os.environ["EMAKI_HOME"]) / "models"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_safetensors, folder / "fresh.safetensors")

        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "fresh"}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("fresh.safetensors [")
        missing = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "stale"})
        assert missing.status_code == 400 and "no checkpoint 'stale'" in missing.text
        assert "fresh.safetensors" in missing.text  # the listing named in the error is the new one

"""`emaki models`: what is found in emaki's folders and an A1111 install, with hashes and reasons."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from typer.testing import CliRunner

from emaki.cli import _register_commands, app
from emaki.models.hashes import sha256_file
from emaki.networks import Embedding, Hypernetwork, save_embedding, save_hypernetwork


def _home() -> Path:
    return Path(os.environ["EMAKI_HOME"])


def test_models_lists_everything_with_hashes_and_skip_reasons(tmp_path, tiny_safetensors):
    a1111 = tmp_path / "webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    (a1111 / "models" / "VAE").mkdir(parents=True)
    shutil.copy(tiny_safetensors, a1111 / "models" / "Stable-diffusion" / "anything-v3.safetensors")
    (a1111 / "models" / "VAE" / "kl-f8-anime.vae.pt").write_bytes(b"vae bytes")
    save_embedding(Embedding("easynegative", torch.zeros(8, 768)), a1111 / "embeddings" / "easynegative.safetensors")
    save_embedding(Embedding("tiny-style", torch.zeros(2, 32)), _home() / 'embeddings' / "tiny-style.pt")
    save_hypernetwork(Hypernetwork.create("anime", (768, 320)), a1111 / "models" / "hypernetworks" / "anime.pt")
    (_home() / 'hypernetworks').mkdir(parents=True)
    (_home() / 'hypernetworks' / "broken.pt").write_bytes(b"nope")
    (_home() / 'models').mkdir(parents=True)
    shutil.copy(tiny_safetensors, _home() / 'models' / "mine.safetensors")

    _register_commands()
    result = CliRunner().invoke(app, ["models", "--a1111", str(a1111), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert sorted(r["name"] for r in found["checkpoints"]) == ["anything-v3", "mine"]
    assert {r["hash"] for r in found["checkpoints"]} == {sha256_file(tiny_safetensors)[:10]}
    assert [r["name"] for r in found["vaes"]] == ["kl-f8-anime.vae.pt"]
    embeddings = {r["name"]: r for r in found["embeddings"]}
    assert embeddings["easynegative"]["status"] == "loaded" and embeddings["easynegative"]["vectors"] == 8
    assert embeddings["tiny-style"]["status"] == "skipped" and "width 32" in embeddings["tiny-style"]["reason"]
    hns = {r["name"]: r for r in found["hypernetworks"]}
    assert hns["anime"]["status"] == "loaded" and hns["anime"]["sizes"] == [320, 768]
    assert hns["anime"]["hash"] == sha256_file(a1111 / "models" / "hypernetworks" / "anime.pt")[:10]
    assert hns["broken"]["status"] == "skipped"

    text = CliRunner().invoke(app, ["models", "--a1111", str(a1111), "--text-width", "32", "--no-hashes"])
    assert text.exit_code == 0, text.output
    assert "tiny-style" in text.output and "skipped: width 768" in text.output
    assert "Hypernetworks (2)" in text.output

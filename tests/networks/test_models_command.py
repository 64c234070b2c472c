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
    result = CliRunner().invoke(app, ["models", "--a1111", str(a1111), "--json", "--text-width", "768"])
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


def test_models_lists_embeddings_of_every_width_unless_one_is_asked(tmp_path):
    # An embedding trained on the demo model (width 128) and one for SD 1.x (768): both work with
    # their models, so a plain `emaki models` lists both, each with its width.
    save_embedding(Embedding("demo-style", torch.zeros(2, 128)), _home() / "embeddings" / "demo-style.safetensors")
    save_embedding(Embedding("easynegative", torch.zeros(8, 768)), _home() / "embeddings" / "easynegative.safetensors")
    _register_commands()
    result = CliRunner().invoke(app, ["models", "--json", "--no-hashes"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["embeddings"]}
    assert (rows["demo-style"]["status"], rows["demo-style"]["width"]) == ("loaded", 128)
    assert (rows["easynegative"]["status"], rows["easynegative"]["width"]) == ("loaded", 768)
    text = CliRunner().invoke(app, ["models", "--no-hashes"])
    assert "2 vectors × 128" in text.output and "8 vectors × 768" in text.output

"""Embeddings and hypernetworks through `generate` on a tiny model: infotext, paste, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_runner import engine_for, generate, runner_workspace

from emaki.errors import ModelLoadError
from emaki.infotext import parse_infotext
from emaki.infotext_codec import decode_infotext
from emaki.networks import (
    Embedding,
    Hypernetwork,
    load_hypernetwork,
    save_embedding,
    save_hypernetwork,
)
from emaki.networks.hypernet_attention import HypernetworkAttnProcessor
from emaki.params import GenerationParams


@pytest.fixture()
def folders(tmp_path):
    emb_dir, hn_dir = tmp_path / "embeddings", tmp_path / "hypernetworks"
    g = torch.Generator().manual_seed(0)
    save_embedding(Embedding("style-a", torch.randn(2, 32, generator=g)), emb_dir / "style-a.pt")
    save_embedding(Embedding("easynegative", torch.randn(3, 32, generator=g)), emb_dir / "neg" / "easynegative.png")
    save_embedding(Embedding("sd15-only", torch.randn(1, 768, generator=g)), emb_dir / "sd15-only.safetensors")
    hn = Hypernetwork.create("anime", (32, 64), activation_func="relu")
    with torch.no_grad():
        for module in hn.modules():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_hypernetwork(hn, hn_dir / "anime.pt")
    return emb_dir, hn_dir


def run(model, folders, **fields):
    params = GenerationParams.create(**({"prompt": "1girl", "negative_prompt": "lowres", "model": str(model),
                                         "seed": 7, "steps": 2, "width": 32, "height": 32} | fields))
    return generate(params, save=False, embeddings_dirs=[folders[0]], hypernetworks_dirs=[folders[1]])


def pixels(result):
    return np.asarray(result.images[0].image).astype(np.int16)


def test_embeddings_in_both_prompts_change_the_image_and_give_ti_hashes(tiny_safetensors, folders):
    plain = run(tiny_safetensors, folders, prompt="1girl, style-a", negative_prompt="easynegative",
                emphasis="No norm")
    text = plain.images[0].infotext
    fields = parse_infotext(text)
    from emaki.networks import load_embedding

    style = load_embedding(folders[0] / "style-a.pt")
    neg = load_embedding(folders[0] / "neg" / "easynegative.png")
    assert fields["TI hashes"] == f"style-a: {style.shorthash}, easynegative: {neg.shorthash}"
    assert text.index("TI hashes") < text.index("Emphasis")
    params = GenerationParams.create(prompt="1girl, style-a", negative_prompt="easynegative", model=str(tiny_safetensors),
                                     seed=7, steps=2, width=32, height=32, emphasis="No norm")
    empty = folders[0].parent / "no-embeddings"
    without = generate(params, save=False, embeddings_dirs=[empty], hypernetworks_dirs=[folders[1]])
    assert "TI hashes" not in without.images[0].infotext
    assert not np.array_equal(pixels(plain), pixels(without))


def test_an_embedding_of_the_wrong_width_is_plain_text(tiny_safetensors, folders):
    result = run(tiny_safetensors, folders, prompt="sd15-only, 1girl")
    assert "TI hashes" not in result.images[0].infotext


def test_hypernetwork_tag_applies_then_the_next_generation_is_clean(tiny_safetensors, folders):
    base = run(tiny_safetensors, folders)
    tagged = run(tiny_safetensors, folders, prompt="1girl <hypernet:anime:0.8>")
    assert not np.array_equal(pixels(base), pixels(tagged))
    assert "<hypernet:anime:0.8>" in tagged.images[0].infotext and "Hypernet:" not in tagged.images[0].infotext
    weaker = run(tiny_safetensors, folders, prompt="1girl <hypernet:anime:0.2>")
    assert not np.array_equal(pixels(weaker), pixels(tagged))
    after = run(tiny_safetensors, folders)
    assert np.array_equal(pixels(base), pixels(after))
    # the cached UNet is shared between generations: nothing of the hypernetwork stays on it
    for processor in _cached_unet_processors(tiny_safetensors):
        assert not isinstance(processor, HypernetworkAttnProcessor)


def _cached_unet_processors(model):
    loaded = engine_for(runner_workspace()).load(str(model))
    return list(loaded.components.unet.attn_processors.values())


def test_hypernetwork_setting_writes_infotext_and_pasting_reapplies_it(tiny_safetensors, folders):
    result = run(tiny_safetensors, folders, hypernetwork="anime", hypernetwork_strength=0.7, emphasis="No norm")
    text = result.images[0].infotext
    hn = load_hypernetwork(folders[1] / "anime.pt")
    assert f"Hypernet: anime, Hypernet hash: {hn.shorthash}, Hypernet strength: 0.7" in text
    assert text.index("Emphasis") < text.index("Hypernet")
    pasted = decode_infotext(text)  # the setting comes back as the setting, not as a prompt tag
    assert pasted.prompt == "1girl" and (pasted.hypernetwork, pasted.hypernetwork_strength) == ("anime", 0.7)
    again = generate(pasted.updated(model=str(tiny_safetensors), emphasis="No norm"), save=False, embeddings_dirs=[folders[0]],
                     hypernetworks_dirs=[folders[1]])
    assert np.array_equal(pixels(result), pixels(again))
    full = run(tiny_safetensors, folders, hypernetwork="anime")
    assert "Hypernet strength" not in full.images[0].infotext


def test_unknown_hypernetwork_is_a_clear_error(tiny_safetensors, folders):
    with pytest.raises(ModelLoadError, match="hypernetwork 'missing'"):
        run(tiny_safetensors, folders, prompt="1girl <hypernet:missing:1>")


def test_cli_flags(tiny_safetensors, folders, tmp_path):
    from typer.testing import CliRunner

    from emaki.cli import _register_commands, app

    _register_commands()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", "1girl, style-a", "--model", str(tiny_safetensors), "--steps", "2", "--size", "32x32",
        "--seed", "3", "--hypernetwork", "anime", "--hypernetwork-strength", "0.5", "--embeddings-dir",
        str(folders[0]), "--hypernetworks-dir", str(folders[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    from emaki.infotext import read_infotext

    [image] = sorted(out.glob("*.png"))
    fields = parse_infotext(read_infotext(image))
    assert fields["Hypernet"] == "anime" and fields["Hypernet strength"] == "0.5"
    assert fields["TI hashes"].startswith("style-a: ")

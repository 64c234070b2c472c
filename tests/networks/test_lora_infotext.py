"""LoRAs in the infotext and embeddings bundled in LoRA files, on the demo model: `Lora hashes`
where A1111 writes it (before `TI hashes`), read back by `emaki info` and `--from` without
becoming a parameter, a missing LoRA named; a bundled embedding used by name only while its
LoRA is in the prompt."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli as _cli
from engine_runner import ONE_THREAD
from PIL import Image
from tiny_lora import write_tiny_lora

from emaki.engine import Engine
from emaki.engine.networks import NETWORK_KINDS
from emaki.errors import ParamsError
from emaki.infotext import parse_infotext
from emaki.infotext_codec import ImageFacts, decode_infotext, encode_infotext
from emaki.models.resolve import demo_model_path
from emaki.networks import Embedding, save_embedding
from emaki.params import GenerationParams
from emaki.workspace import Workspace

_FIELD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
EMBEDDING = "nekoemb"
BUNDLED = 2.0 * torch.randn(1, 128, generator=torch.Generator().manual_seed(7))  # the demo model's width


def field_keys(infotext: str) -> list[str]:
    """The keys of an infotext's last line, in the order they are written."""
    return [key for key, _ in _FIELD.findall(infotext.strip().split("\n")[-1])]


def test_lora_hashes_are_written_before_ti_hashes_in_a1111_order():
    params = GenerationParams.create(prompt="1girl <lora:style:0.8>", negative_prompt="lowres", seed=1, steps=4,
                                     width=64, height=64, enable_hr=True, hr_scale=2, hr_upscaler="Latent",
                                     hr_prompt="1girl, detailed", denoising_strength=0.5, clip_skip=2,
                                     emphasis="No norm", hypernetwork="anime", hypernetwork_strength=0.5)
    facts = ImageFacts(1, 2, "demo", "abcdef0123", networks={
        "TI hashes": "neko: 0123456789ab", "Hypernet hash": "fedcba987654", "Lora hashes": "style: 1234567890ab"},
        version="emaki test")
    text = encode_infotext(params, facts)
    assert field_keys(text) == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
        "Denoising strength", "Clip skip", "RNG", "Hires upscale", "Hires upscaler", "Hires prompt",
        "Lora hashes", "TI hashes", "Emphasis", "Hypernet", "Hypernet hash", "Hypernet strength", "Version"]
    assert 'Lora hashes: "style: 1234567890ab", TI hashes: "neko: 0123456789ab"' in text
    fields = parse_infotext(text)
    assert fields["Lora hashes"] == "style: 1234567890ab"
    again = decode_infotext(text)  # informative only: the prompt's tag re-applies the LoRA
    assert again.prompt == "1girl <lora:style:0.8>" and again == decode_infotext(text.replace(
        'Lora hashes: "style: 1234567890ab", ', ""))


# --- on the demo model ---

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    home = tmp_path_factory.mktemp("lora-infotext")
    workspace = (Workspace(home).with_folders("loras", [home / "Lora"])
                 .with_folders("embeddings", [home / "embeddings"]))
    narrow = torch.randn(1, 64, generator=torch.Generator().manual_seed(8))
    write_tiny_lora(home / "Lora" / "bundle.safetensors", embeddings={EMBEDDING: BUNDLED, "narrowemb": narrow})
    return Engine(workspace, ONE_THREAD)


def _generate(engine, prompt):
    params = GenerationParams.create(prompt=prompt, negative_prompt="lowres", model=str(demo_model_path()), seed=3,
                                     steps=2, width=32, height=32)
    return engine.generate(params, save=False).images[0]


def _pixels(image):
    return np.asarray(image.image).astype(np.int16)


def test_a_bundled_embedding_is_used_by_name_only_while_its_lora_is_in_the_prompt(engine, caplog):
    words = _pixels(_generate(engine, f"1girl, {EMBEDDING}"))  # no LoRA: the name is plain words
    with_lora = _generate(engine, f"1girl, {EMBEDDING} <lora:bundle:0>")  # weight 0: only the embedding acts
    assert not np.array_equal(_pixels(with_lora), words)
    assert parse_infotext(with_lora.infotext)["TI hashes"] == f"{EMBEDDING}: bundle"  # A1111's BundledTIHash
    assert np.array_equal(_pixels(_generate(engine, "1girl <lora:bundle:0>")), _pixels(_generate(engine, "1girl")))
    assert np.array_equal(_pixels(_generate(engine, f"1girl, {EMBEDDING}")), words)  # not kept after its run
    assert "TI hashes" not in _generate(engine, f"1girl, {EMBEDDING}").infotext

    # It is exactly the stored vectors: a folder embedding holding them gives the same image.
    folder = engine.workspace.folders("embeddings")[0]
    save_embedding(Embedding(EMBEDDING, BUNDLED), folder / f"{EMBEDDING}.pt")
    try:
        assert np.array_equal(_pixels(_generate(engine, f"1girl, {EMBEDDING}")), _pixels(with_lora))
        # A folder embedding of the same name wins over the bundled one (A1111: the bundled one is skipped).
        save_embedding(Embedding(EMBEDDING, -BUNDLED.repeat(2, 1)), folder / f"{EMBEDDING}.pt")
        folder_only = _generate(engine, f"1girl, {EMBEDDING}")
        with caplog.at_level(logging.WARNING, logger="emaki.engine.stages"):
            both = _generate(engine, f"1girl, {EMBEDDING} <lora:bundle:0>")
        assert np.array_equal(_pixels(both), _pixels(folder_only))
        assert f"embedding '{EMBEDDING}' bundled in a LoRA is not used: the embeddings folder has one" in caplog.text
    finally:
        shutil.rmtree(folder)

    # One of another width than the text encoder's is skipped, with a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emaki.engine.stages"):
        narrow = _generate(engine, "1girl, narrowemb <lora:bundle:0>")
    assert np.array_equal(_pixels(narrow), _pixels(_generate(engine, "1girl, narrowemb")))
    assert "'narrowemb' bundled in a LoRA is not used: width 64 does not fit" in caplog.text


def test_a_generation_writes_lora_hashes_then_ti_hashes(engine):
    image = _generate(engine, f"1girl, {EMBEDDING} <lora:bundle:0.7>")
    library = engine.networks.library(next(k for k in NETWORK_KINDS if k.name == "lora"))
    shorthash = library.shorthash(engine.workspace.folders("loras")[0] / "bundle.safetensors")
    assert field_keys(image.infotext) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
                                          "Model hash", "Model", "RNG", "Lora hashes", "TI hashes", "Version"]
    assert f'Lora hashes: "bundle: {shorthash}", TI hashes: "{EMBEDDING}: bundle", Version: emaki ' in image.infotext


# --- the CLI: `emaki info --json`, `--from` ---


def test_info_shows_lora_hashes_and_from_reapplies_the_tag_or_names_a_missing_lora(tmp_path, capsys):
    home = Path(os.environ["EMAKI_HOME"])
    lora = write_tiny_lora(home / "loras" / "style.safetensors", alias="style-v1")
    out = tmp_path / "out"
    common = ("--steps", "2", "--size", "32x32", "--seed", "11", "--threads", "1", "--out", str(out))
    code, _, err = _cli(capsys, "generate", "1girl <lora:style-v1:0.9>", *common)
    assert code == 0, err
    [first] = sorted(out.glob("*.png"))

    code, printed, err = _cli(capsys, "info", "--json", str(first))
    assert code == 0, err
    fields = json.loads(printed)
    assert re.fullmatch(r"style-v1: [0-9a-f]{12}", fields["Lora hashes"])
    assert fields["Prompt"] == "1girl <lora:style-v1:0.9>"

    code, _, err = _cli(capsys, "generate", "--from", str(first), "--out", str(out), "--threads", "1")
    assert code == 0, err
    second = out / "00001-11.png"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert Image.open(second).info["parameters"] == Image.open(first).info["parameters"]

    lora.unlink()
    code, _, err = _cli(capsys, "generate", "--from", str(first), "--out", str(out), "--threads", "1")
    assert code == 2 and "Traceback" not in err, err
    assert "lora 'style-v1': no such file in" in err and "<lora:style-v1:0.9>" in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_missing_lora_from_an_infotext_is_named(engine):
    text = ("1girl <lora:gone:0.5>\nNegative prompt: lowres\nSteps: 2, Sampler: Euler a, Seed: 3, Size: 32x32, "
            "Model: emaki-demo, Lora hashes: \"gone: 0123456789ab\", Version: emaki")
    params = decode_infotext(text).updated(model=str(demo_model_path()))
    with pytest.raises(ParamsError, match=r"lora 'gone': no such file in .*\(prompt tag <lora:gone:0.5>\)"):
        engine.generate(params, save=False)

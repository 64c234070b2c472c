"""Embedding files in every layout users share (specs §3.1-3.3): load, save, refuse."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from networks_payload import Payload
from PIL import Image
from safetensors.torch import save_file

from emaki.errors import ModelLoadError, UnsafeFileError
from emaki.models.hashes import sha256_file
from emaki.networks import Embedding, NotAnEmbedding, load_embedding, save_embedding
from emaki.networks.image_embedding import TEXT_CHUNK_KEY, lcg_nibbles

VECTORS = torch.randn(3, 32, generator=torch.Generator().manual_seed(7))


def write_layout(folder: Path, layout: str, vectors: torch.Tensor = VECTORS, name: str = "style-a") -> Path:
    """One embedding file per layout found in the wild."""
    if layout == "a1111-pt":
        path = folder / f"{name}.pt"
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name,
                    "step": 1500, "sd_checkpoint": "925997e9", "sd_checkpoint_name": "nai"}, path)
    elif layout == "parameterdict-pt":
        path = folder / f"{name}.pt"
        params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
        torch.save({"string_to_token": {"*": 265}, "string_to_param": params, "name": name, "step": 10}, path)
    elif layout == "diffusers-bin":
        path = folder / f"{name}.bin"
        torch.save({"<style-a>": vectors}, path)
    elif layout == "diffusers-bin-1d":
        path = folder / f"{name}.bin"
        torch.save({"<style-a>": vectors[0]}, path)
    elif layout == "kohya-safetensors":
        path = folder / f"{name}.safetensors"
        save_file({"emb_params": vectors.contiguous()}, str(path))
    elif layout == "diffusers-safetensors":
        path = folder / f"{name}.safetensors"
        save_file({"<style-a>": vectors.half().contiguous()}, str(path))
    elif layout in ("png", "png-pixels-only", "webp"):
        suffix = ".webp" if layout == "webp" else ".png"
        path = save_embedding(Embedding(name, vectors, step=60), folder / f"{name}{suffix}")
        if layout == "png-pixels-only":
            Image.open(path).save(path)  # re-saved by PIL: the text chunk is gone, the pixels stay
    else:
        raise AssertionError(layout)
    return path


LAYOUTS = ["a1111-pt", "parameterdict-pt", "diffusers-bin", "diffusers-bin-1d", "kohya-safetensors",
           "diffusers-safetensors", "png", "png-pixels-only", "webp"]


def expected_vectors(layout: str) -> torch.Tensor:
    if layout == "diffusers-bin-1d":
        return VECTORS[:1]
    if layout == "diffusers-safetensors":
        return VECTORS.half().float()
    return VECTORS


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_the_same_vectors(tmp_path, layout):
    path = write_layout(tmp_path, layout)
    emb = load_embedding(path)
    assert emb.name == "style-a"
    assert emb.vectors.dtype == torch.float32 and emb.vectors.ndim == 2
    assert torch.equal(emb.vectors, expected_vectors(layout))
    assert emb.sha256 == sha256_file(path) and emb.shorthash == emb.sha256[:12]
    assert (emb.num_vectors, emb.width) == (expected_vectors(layout).shape[0], 32)


def test_a1111_metadata_is_read(tmp_path):
    emb = load_embedding(write_layout(tmp_path, "a1111-pt"))
    assert (emb.step, emb.sd_checkpoint, emb.sd_checkpoint_name, emb.layout) == (1500, "925997e9", "nai", "a1111")
    assert load_embedding(write_layout(tmp_path, "kohya-safetensors")).layout == "kohya"
    assert load_embedding(write_layout(tmp_path, "diffusers-bin")).layout == "diffusers"


def test_the_name_stored_in_an_image_wins_over_the_file_name(tmp_path):
    path = save_embedding(Embedding("rick", VECTORS, step=60), tmp_path / "card.png")
    emb = load_embedding(path)
    assert emb.name == "rick" and emb.step == 60 and emb.layout == "image text chunk"
    Image.open(path).save(tmp_path / "plain.png")
    assert load_embedding(tmp_path / "plain.png").layout == "image pixels"


def test_an_image_without_data_is_a_preview_not_an_embedding(tmp_path):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "style-a.png")
    with pytest.raises(NotAnEmbedding):
        load_embedding(tmp_path / "style-a.png")


def test_multiple_terms_and_unknown_payloads_are_refused(tmp_path):
    torch.save({"string_to_param": {"*": VECTORS, "+": VECTORS}}, tmp_path / "two.pt")
    with pytest.raises(ModelLoadError, match="multiple terms"):
        load_embedding(tmp_path / "two.pt")
    torch.save({"a": VECTORS, "b": VECTORS}, tmp_path / "many.bin")
    with pytest.raises(ModelLoadError, match="not a textual-inversion embedding"):
        load_embedding(tmp_path / "many.bin")


def test_a_pickle_asking_for_code_is_refused_and_nothing_runs(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"string_to_param": {"*": Payload()}}, f, protocol=2)
    Payload.ran = False
    with pytest.raises(UnsafeFileError, match="refused"):
        load_embedding(path)
    assert not Payload.ran


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors", ".png", ".webp"])
def test_save_then_load_round_trips(tmp_path, suffix):
    emb = Embedding("my-style", VECTORS, step=123, sd_checkpoint="abcd1234", sd_checkpoint_name="anything")
    back = load_embedding(save_embedding(emb, tmp_path / f"my-style{suffix}"))
    assert torch.equal(back.vectors, VECTORS)
    assert back.name == "my-style" and back.step == 123
    assert (back.sd_checkpoint, back.sd_checkpoint_name) == ("abcd1234", "anything")


def test_saved_pt_is_the_a1111_layout_with_plain_containers_only(tmp_path):
    path = save_embedding(Embedding("x", VECTORS, step=5), tmp_path / "x.pt")
    data = torch.load(path, weights_only=True)  # no allowlist: nothing but tensors and builtins
    assert type(data) is dict and type(data["string_to_param"]) is dict
    assert set(data) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert data["string_to_token"] == {"*": 265} and torch.equal(data["string_to_param"]["*"], VECTORS)


def a1111_read_pixels(image: Image.Image) -> dict:
    """The decoding steps of specs §3.3, written out independently of emaki's reader."""
    pixels = np.asarray(image.convert("RGB")).astype(np.uint8)
    lit = (pixels > 0).all(2)
    cols, rows = lit.any(0), lit.any(1)
    c0, c1 = cols.argmax(), len(cols) - cols[::-1].argmax()
    r0, r1 = rows.argmax(), len(rows) - rows[::-1].argmax()
    pixels = pixels[r0:r1, c0:c1] & 0x0F
    black = np.where(pixels.sum(axis=(0, 2)) == 0)[0]
    low, high = pixels[:, : black.min()], pixels[:, black.max() + 1 :]
    stream = []
    seed = 0
    for _ in range(low.size):
        seed = (1664525 * seed + 1013904223) % 2**32
        stream.append(seed % 255)
    noise = (np.array(stream, dtype=np.uint8) & 0x0F).reshape(low.shape)
    raw = (((high ^ noise) << 4) | (low ^ noise)).flatten().tobytes()
    return json.loads(zlib.decompress(raw))


def test_png_card_decodes_with_a1111_rules_by_both_methods(tmp_path):
    path = save_embedding(Embedding("card", VECTORS, step=60), tmp_path / "card.png")
    image = Image.open(path)
    for data in (a1111_read_pixels(image), json.loads(base64.b64decode(image.text[TEXT_CHUNK_KEY]))):
        assert data["name"] == "card" and data["step"] == 60
        assert list(data["string_to_param"]) == ["*"]
        assert torch.equal(torch.tensor(data["string_to_param"]["*"]["TORCHTENSOR"], dtype=torch.float32), VECTORS)
    # the layout: [low block | black column | picture | black column | high block]
    pixels = np.asarray(image)
    black = np.where((pixels == 0).all(axis=(0, 2)))[0]
    assert len(black) >= 2 and (pixels[:, : black.min()] > 0).all()


def test_lcg_stream_matches_its_definition():
    seed, values = 0, []
    for _ in range(1000):
        seed = (1664525 * seed + 1013904223) % 2**32
        values.append((seed % 255) & 0x0F)
    assert lcg_nibbles(1000).tolist() == values


def test_checksum_is_a1111s_16_bit_hash():
    emb = Embedding("x", torch.tensor([[0.5, -0.25, 1.0]]))
    r = 0
    for v in (50, -25, 100):
        r = (r * 281 ^ v * 997) & 0xFFFFFFFF
    assert emb.checksum() == f"{r & 0xFFFF:04x}" and len(emb.checksum()) == 4


def test_sdxl_pair_loads_but_has_sdxl_width(tmp_path):
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, str(tmp_path / "xl.safetensors"))
    emb = load_embedding(tmp_path / "xl.safetensors")
    assert emb.layout == "sdxl" and emb.width == 2048

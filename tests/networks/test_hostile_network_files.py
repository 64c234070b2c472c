"""Hostile and broken files in the embedding, hypernetwork and LoRA folders (issue 16, items 5-7):
each is listed as skipped with its reason, nothing blocks, nothing big is allocated for a small
file, and everything else still lists and generates."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_runner import generate
from hostile_files import broken_entries, png_bytes, text_chunk, within
from PIL import Image
from tiny_lora import write_tiny_lora

from emaki.engine.inventory import take_inventory
from emaki.errors import ModelLoadError
from emaki.networks import (
    Embedding,
    EmbeddingLibrary,
    Hypernetwork,
    load_embedding,
    load_hypernetwork,
    save_embedding,
    save_hypernetwork,
    walk_files,
)
from emaki.networks.image_embedding import TEXT_CHUNK_KEY, embedding_to_b64, hide_payload_in_pixels
from emaki.params import GenerationParams
from emaki.workspace import Workspace


def good_hypernetwork(folder: Path, name: str = "good", sizes: tuple[int, ...] = (32,)) -> Path:
    return save_hypernetwork(Hypernetwork.create(name, sizes, generator=torch.Generator().manual_seed(0)),
                             folder / f"{name}.pt")


def altered(source: Path, target: Path, **changes: object) -> Path:
    data = torch.load(source, weights_only=True)
    data.update(changes)
    torch.save(data, target)
    return target


def rows_by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


@pytest.mark.parametrize(("changes", "named"), [
    ({"step": "abc"}, "step"),
    ({"step": [1]}, "step"),
    ({"layer_structure": "abc"}, "layer_structure"),
    ({"layer_structure": [1, "two", 1]}, "layer_structure"),
    ({"layer_structure": [1, math.nan, 1]}, "layer_structure"),
    ({"layer_structure": [1, -2, 1]}, "layer_structure"),
    ({"layer_structure": 5}, "layer_structure"),
    ({"dropout_structure": 5}, "dropout_structure"),
    ({"dropout_structure": [0, "x", 0]}, "dropout_structure"),
    ({"activation_func": ["relu"]}, "activation"),
])
def test_a_hypernetwork_with_bad_metadata_is_skipped_and_the_rest_lists(tmp_path, changes, named):
    folder = tmp_path / "hypernetworks"
    good = good_hypernetwork(folder)
    altered(good, folder / "bad.pt", **changes)
    with pytest.raises(ModelLoadError, match=rf"bad\.pt: .*{named}"):
        load_hypernetwork(folder / "bad.pt")
    rows = rows_by_name(take_inventory(Workspace(tmp_path), text_width=768, hashes=False).rows("hypernetworks"))
    assert rows["good"]["status"] == "loaded"
    assert rows["bad"]["status"] == "skipped" and named in rows["bad"]["reason"]


def test_a_structure_bigger_than_the_file_is_refused_before_building(tmp_path):
    """A 1 KB file asking for 768 → 768·4096 → 768 layers: the structure implies far more
    parameters than the file holds, so nothing is built (A1111 would allocate gigabytes)."""
    path = tmp_path / "bomb.pt"
    small = {"linear.0.weight": torch.zeros(2, 2), "linear.0.bias": torch.zeros(2)}
    torch.save({768: (small, small), "layer_structure": [1, 4096, 1]}, path)
    with pytest.raises(ModelLoadError, match=r"bomb\.pt: layer 768 does not fit layer_structure \[1.0, 4096.0, 1.0\]: "
                                             r"it implies 4,834,984,704 parameters per module; the file holds 6"):
        load_hypernetwork(path)
    wide = tmp_path / "wide.pt"
    torch.save({10**9: (small, small)}, wide)
    with pytest.raises(ModelLoadError, match=r"wide\.pt: layer 1000000000 does not fit .* it implies"):
        load_hypernetwork(wide)


def test_a_hypernetwork_that_fits_its_file_still_loads(tmp_path):
    path = good_hypernetwork(tmp_path, sizes=(32, 64))
    assert load_hypernetwork(path).sizes == [32, 64]


def test_folder_link_loops_are_walked_once(tmp_path):
    folder = tmp_path / "hypernetworks"
    good_hypernetwork(folder / "deep")
    for name in ("up-1", "up-2", "up-3"):  # each a link back to the top: 3^depth paths if followed
        os.symlink(folder, folder / "deep" / name)
    found = within(20, walk_files, [folder], (".pt",))
    assert [p.name for p in found] == ["good.pt"]


@pytest.mark.parametrize(("kind", "suffix"), [("embeddings", ".pt"), ("embeddings", ".png"),
                                              ("hypernetworks", ".pt"), ("loras", ".safetensors")])
def test_links_fifos_and_devices_are_listed_as_skipped_without_blocking(tmp_path, kind, suffix):
    folder = tmp_path / kind
    broken = broken_entries(folder, suffix)
    save_embedding(Embedding("fine", torch.zeros(1, 768)), tmp_path / "embeddings" / "fine.pt")
    good_hypernetwork(tmp_path / "hypernetworks")
    write_tiny_lora(tmp_path / "loras" / "style.safetensors")
    inventory = within(30, take_inventory, Workspace(tmp_path), text_width=768, hashes=True,
                       unblock=[broken["fifo"]])
    rows = rows_by_name(inventory.rows(kind))
    reasons = {
        "dangling": "dangling symbolic link", "loop-a": "symbolic link loop", "loop-b": "symbolic link loop",
        "fifo": "FIFO", "zero": "character device",
    }
    for name, reason in reasons.items():
        assert rows[name]["status"] == "skipped" and reason in rows[name]["reason"], rows[name]
    assert rows_by_name(inventory.rows("embeddings"))["fine"]["status"] == "loaded"
    assert rows_by_name(inventory.rows("hypernetworks"))["good"]["status"] == "loaded"
    assert rows_by_name(inventory.rows("loras"))["style"]["status"] == "loaded"


def test_loading_a_fifo_by_name_fails_at_once(tmp_path):
    from emaki.networks import HypernetworkLibrary, LoraLibrary

    broken = broken_entries(tmp_path, ".pt")
    with pytest.raises(ModelLoadError, match=r"fifo\.pt: a FIFO"):
        within(20, HypernetworkLibrary().load, "fifo", [tmp_path], unblock=[broken["fifo"]])
    with pytest.raises(ModelLoadError, match=r"zero\.pt: a character device"):
        within(20, load_embedding, broken["zero"])
    with pytest.raises(ModelLoadError, match=r"loop-a\.pt: a symbolic link loop"):
        within(20, LoraLibrary().load, broken["loop-a"])


def test_generation_goes_on_beside_broken_files(tmp_path, tiny_safetensors):
    embeddings, hypernetworks = tmp_path / "embeddings", tmp_path / "hypernetworks"
    broken = broken_entries(embeddings, ".pt") | {"hn-" + k: v for k, v in broken_entries(hypernetworks, ".pt").items()}
    good_hypernetwork(hypernetworks, "anime", (32, 64))
    altered(hypernetworks / "anime.pt", hypernetworks / "bad.pt", step="abc")
    params = GenerationParams.create(prompt="1girl <hypernet:anime:0.5>", model=str(tiny_safetensors), seed=1,
                                     steps=1, width=32, height=32)
    result = within(120, generate, params, save=False, embeddings_dirs=[embeddings],
                    hypernetworks_dirs=[hypernetworks], unblock=[broken["fifo"], broken["hn-fifo"]])
    assert len(result.images) == 1
    with pytest.raises(ModelLoadError, match=r"bad\.pt: .*step"):
        generate(params.updated(prompt="1girl <hypernet:bad:0.5>"), save=False, embeddings_dirs=[embeddings],
                 hypernetworks_dirs=[hypernetworks])


def _hidden_card(path: Path, payload: bytes) -> Path:
    hide_payload_in_pixels(Image.new("RGB", (8, 8), (90, 90, 90)), payload).save(path)
    return path


def test_an_embedding_image_with_a_zlib_bomb_in_its_pixels_is_refused(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    bomb = zlib.compress(b" " * 40_000_000 + b"{}", 9)  # 40 KB that inflate to 40 MB
    _hidden_card(folder / "bomb.png", bomb)
    with pytest.raises(ModelLoadError, match=r"bomb\.png: the data hidden in its pixels inflates to more than"):
        load_embedding(folder / "bomb.png")
    scan = EmbeddingLibrary().scan([folder])
    assert [s.name for s in scan.skipped] == ["bomb"] and "inflates" in scan.skipped[0].reason


def test_hidden_pixel_data_still_reads(tmp_path):
    vectors = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    payload = zlib.compress(json.dumps({"string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}},
                                        "name": "hidden"}).encode())
    assert load_embedding(_hidden_card(tmp_path / "card.png", payload)).name == "hidden"


def test_an_embedding_image_of_a_huge_size_is_refused_before_decoding(tmp_path):
    """6000 × 6000 declared in a few hundred bytes: refused from the header, never decoded (PIL
    itself only warns below 89 megapixels)."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(6000, 6000))
    with pytest.raises(ModelLoadError, match=r"huge\.png: 6000×6000 pixels, more than .* an embedding image"):
        load_embedding(path)
    scan = EmbeddingLibrary().scan([tmp_path])
    assert "6000×6000" in scan.skipped[0].reason


def test_an_embedding_text_chunk_over_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "chatty.png"
    path.write_bytes(png_bytes(4, 4, chunks=[text_chunk(TEXT_CHUNK_KEY, b"A" * 40_000_000)]))
    with pytest.raises(ModelLoadError, match=r"chatty\.png: a tEXt chunk of 40,000,0\d\d bytes"):
        load_embedding(path)
    fine = tmp_path / "fine.png"
    data = {"string_to_param": {"*": torch.ones(1, 4)}, "name": "fine"}
    fine.write_bytes(png_bytes(4, 4, chunks=[text_chunk(TEXT_CHUNK_KEY, embedding_to_b64(data).encode())]))
    assert load_embedding(fine).vectors.shape == (1, 4)


def test_a_lora_header_whose_shapes_do_not_match_its_data_is_skipped(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    header = {"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 8]},
              "lora_unet_x.lora_up.weight": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    raw = json.dumps(header).encode()
    (folder / "liar.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))
    write_tiny_lora(folder / "style.safetensors")
    rows = rows_by_name(take_inventory(Workspace(tmp_path), text_width=768, hashes=False).rows("loras"))
    assert rows["style"]["status"] == "loaded"
    assert rows["liar"]["status"] == "skipped"
    assert "lora_unet_x.lora_down.weight" in rows["liar"]["reason"] and "needs 4398046511104 bytes" in rows["liar"]["reason"]


def test_a_pickled_lora_declaring_more_data_than_it_holds_is_skipped(tmp_path):
    from hostile_files import declare_numel, rewritten_torch_zip

    folder = tmp_path / "loras"
    folder.mkdir()
    rewritten_torch_zip(folder / "big.pt", {"lora_unet_x.lora_down.weight": torch.zeros(123457)},
                        declare_numel(123457, 2**40))
    rows = rows_by_name(take_inventory(Workspace(tmp_path), text_width=768, hashes=False).rows("loras"))
    assert rows["big"]["status"] == "skipped" and "declares" in rows["big"]["reason"]


def test_a_plain_preview_image_is_neither_loaded_nor_skipped(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "preview.png")
    assert EmbeddingLibrary().scan([tmp_path]).skipped == []


def test_the_server_lists_and_generates_beside_broken_files(tmp_path):
    """The routes that list files (and txt2img, which scans the embeddings) answer 200."""
    from fastapi.testclient import TestClient

    from emaki.server import ServerSettings, create_app

    home = Path(os.environ["EMAKI_HOME"])
    fifos = [broken_entries(home / folder, suffix)["fifo"] for folder, suffix in (
        ("models", ".safetensors"), ("models/VAE", ".pt"), ("embeddings", ".pt"), ("hypernetworks", ".pt"),
        ("loras", ".safetensors"))]
    altered(good_hypernetwork(home / "hypernetworks"), home / "hypernetworks" / "bad.pt", step="abc")

    def exercise() -> dict[str, int]:
        with TestClient(create_app(ServerSettings())) as client:
            codes = {route: client.get(route).status_code for route in (
                "/sdapi/v1/sd-models", "/sdapi/v1/sd-vae", "/sdapi/v1/options", "/sdapi/v1/hypernetworks",
                "/sdapi/v1/embeddings", "/sdapi/v1/loras", "/api/models")}
            codes["txt2img"] = client.post("/sdapi/v1/txt2img", json={"prompt": "1girl", "steps": 1, "width": 64,
                                                                      "height": 64}).status_code
            return codes

    codes = within(180, exercise, unblock=fifos)
    assert set(codes.values()) == {200}, codes

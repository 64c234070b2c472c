"""Hostile and broken model files (issue 16, items 5-8): the restricted loader checks what a pickle
declares against what the file holds before allocating, refuses sparse tensors, names the global
it refuses; FIFOs, devices and broken links are never opened; the listing skips them."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hostile_files import broken_entries, declare_numel, rewritten_torch_zip, within
from safetensors.torch import save_file

from emaki.engine.inventory import take_inventory
from emaki.errors import ModelLoadError, UnsafeFileError
from emaki.models.checkpoint import CONFIG_METADATA_KEY, read_checkpoint
from emaki.models.hashes import HashCache, file_hashes, sha256_file
from emaki.models.loader import load_model_uncached
from emaki.models.safe_load import load_pickle, load_tensors, sniff_format
from emaki.models.safetensors_header import read_checked_safetensors_header
from emaki.workspace import Workspace


@pytest.mark.parametrize("numel", [123458, 2**31, 2**62])
def test_a_storage_declaring_more_than_its_record_is_refused(tmp_path, numel):
    path = rewritten_torch_zip(tmp_path / "big.ckpt", {"w": torch.zeros(123457)}, declare_numel(123457, numel))
    with pytest.raises(ModelLoadError, match=rf"big\.ckpt: storage '0' declares {4 * numel:,} bytes; "
                                             r"the file holds 493,828"):
        load_pickle(path)


def _legacy(tensors: dict, numel: int | None = None) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensors, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    if numel is not None:
        count = next(iter(tensors.values())).numel()
        data = data.replace(b"J" + struct.pack("<i", count), b"\x8a\x09" + numel.to_bytes(9, "little", signed=True), 1)
    return data


def test_a_legacy_file_declaring_more_than_it_holds_is_refused_before_allocating(tmp_path):
    """torch's legacy reader allocates each declared storage before reading it."""
    path = tmp_path / "old.pt"
    path.write_bytes(_legacy({"w": torch.zeros(123457)}, numel=2**40))
    with pytest.raises(ModelLoadError, match=r"old\.pt: storage '\d+' declares 4,398,046,511,104 bytes; the file "
                                             r"holds \d"):
        load_pickle(path)
    fine = tmp_path / "fine.pt"
    fine.write_bytes(_legacy({"w": torch.arange(5.0), "v": torch.ones(2, 2, dtype=torch.float16)}))
    loaded = load_pickle(fine)
    assert torch.equal(loaded["w"], torch.arange(5.0)) and loaded["v"].dtype == torch.float16


def test_shared_storages_and_views_still_load(tmp_path):
    base = torch.arange(12.0)
    path = tmp_path / "views.pt"
    torch.save({"a": base, "b": base[2:6], "c": base.view(3, 4)}, path)
    loaded = load_pickle(path)
    assert torch.equal(loaded["b"], base[2:6]) and loaded["c"].shape == (3, 4)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors_are_refused(tmp_path, layout):
    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    tensor = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    path = tmp_path / "sparse.ckpt"
    torch.save({"state_dict": {"w": tensor}}, path)
    with pytest.raises(ModelLoadError, match=r"sparse\.ckpt: holds a sparse tensor .*dense tensors only"):
        load_pickle(path)
    with pytest.raises(ModelLoadError, match=r"sparse\.ckpt: holds a sparse tensor"):
        load_tensors(path)


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


class _System:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(("payload", "named"), [(_Eval(), "builtins.eval"), (_System(), "posix.system")])
def test_the_refusal_names_the_global(tmp_path, payload, named):
    path = tmp_path / "evil.pt"
    torch.save({"x": payload}, path)
    with pytest.raises(UnsafeFileError, match=rf"evil\.pt: refused to load: the pickle asks for {named},"):
        load_pickle(path)
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps({"x": payload}, protocol=2))
    with pytest.raises(UnsafeFileError, match=rf"asks for {named},"):
        load_pickle(bare)


@pytest.mark.parametrize("what", ["fifo", "zero", "dangling", "loop-a"])
def test_nothing_but_regular_files_is_opened(tmp_path, what):
    broken = broken_entries(tmp_path, ".safetensors")
    path = broken[what]
    reason = {"fifo": "a FIFO", "zero": "a character device", "dangling": "a dangling symbolic link",
              "loop-a": "a symbolic link loop"}[what]
    for reader in (sniff_format, load_tensors, sha256_file, file_hashes, HashCache(None).get):
        with pytest.raises(ModelLoadError, match=rf"{what}\.safetensors: {reason}"):
            within(20, reader, path, unblock=[broken["fifo"]])
    with pytest.raises(ModelLoadError, match=rf"{what}\.safetensors: {reason}"):
        within(20, load_model_uncached, path, unblock=[broken["fifo"]])


def test_the_listing_skips_broken_checkpoints_and_vaes_and_lists_the_rest(tmp_path, tiny_safetensors):
    models, vaes = tmp_path / "models", tmp_path / "models" / "VAE"
    broken = broken_entries(models, ".safetensors")
    broken_vaes = broken_entries(vaes, ".pt")
    shutil.copy(tiny_safetensors, models / "mine.safetensors")
    (vaes / "anime.vae.pt").write_bytes(b"vae bytes")
    os.symlink(models, models / "again")  # a folder loop
    inventory = within(60, take_inventory, Workspace(tmp_path), text_width=768, hashes=True,
                       unblock=[broken["fifo"], broken_vaes["fifo"]])
    assert [row["name"] for row in inventory.checkpoints] == ["mine"]
    assert inventory.checkpoints[0]["hash"] == sha256_file(tiny_safetensors)[:10]
    assert [row["name"] for row in inventory.vaes] == ["anime.vae.pt"]
    skipped = {(row["kind"], row["name"]): row["reason"] for row in inventory.skipped}
    for name in ("dangling", "loop-a", "loop-b", "fifo", "zero"):
        assert (("checkpoint", name) in skipped) and (("vae", f"{name}.pt") in skipped)
    assert "FIFO" in skipped[("checkpoint", "fifo")] and "dangling" in skipped[("vae", "dangling.pt")]
    assert "skipped" in inventory.as_json()


def test_safetensors_entries_are_checked_against_the_data(tmp_path):
    def raw(name: str, header: dict, data: bytes) -> Path:
        text = json.dumps(header).encode()
        path = tmp_path / name
        path.write_bytes(struct.pack("<Q", len(text)) + text + data)
        return path

    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.float16)}, str(good))
    assert set(read_checked_safetensors_header(good)) == {"a", "b"}
    cases = {
        "shape": ({"x": {"dtype": "F32", "shape": [1 << 30, 1 << 30], "data_offsets": [0, 8]}}, 8,
                  (r"tensor 'x' of shape \[1073741824, 1073741824\] F32 needs 4611686018427387904 bytes, "
                   r"its data_offsets hold 8")),
        "past-end": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8, r"ends at byte 16"),
        "overlap": ({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                     "y": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, 8, r"'x' and 'y' overlap"),
        "dtype": ({"x": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, 4, r"unknown dtype 'F99'"),
        "negative": ({"x": {"dtype": "U8", "shape": [-4], "data_offsets": [0, 0]}}, 0, r"bad shape"),
        "entry": ({"x": [1, 2]}, 0, r"tensor 'x' is not an object"),
    }
    for name, (header, size, message) in cases.items():
        with pytest.raises(ModelLoadError, match=rf"{name}\.safetensors: corrupt safetensors header: .*{message}"):
            read_checked_safetensors_header(raw(f"{name}.safetensors", header, bytes(size)))


def test_a_ckpt_of_the_demo_weights_loads_or_fails_in_one_line(tmp_path):
    """The demo model's sizes (GroupNorm of 16) are in its safetensors metadata; a `.ckpt` of its
    bare tensors cannot say them, so the sizes inferred by SD 1.x conventions do not build."""
    from safetensors.torch import load_file

    from emaki.models.resolve import demo_model_path

    path = tmp_path / "demo.ckpt"
    torch.save(load_file(str(demo_model_path())), path)
    with pytest.raises(ModelLoadError, match=r"demo\.ckpt: the (UNet|VAE) sizes read from the tensors do not build "
                                             r"a model \(.*num_groups.*\)"):
        load_model_uncached(path)


def test_config_metadata_that_disagrees_with_the_tensors_is_refused(tmp_path, tiny_safetensors):
    """A few bytes of metadata asking for 2·10⁸ text positions would allocate 100 GB."""
    state, config = read_checkpoint(tiny_safetensors)
    data = config.to_dict()
    data["text_encoder"]["max_position_embeddings"] = 200_000_000
    path = tmp_path / "liar.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={CONFIG_METADATA_KEY: json.dumps(data)})
    with pytest.raises(ModelLoadError, match=r"liar\.safetensors: 'emaki_config' metadata says text_encoder "
                                             r"max_position_embeddings 200000000, the tensors say \d+"):
        read_checkpoint(path)


def test_tensors_of_the_wrong_rank_give_one_line(tmp_path, tiny_safetensors):
    state, _ = read_checkpoint(tiny_safetensors)
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(3)
    path = tmp_path / "flat.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelLoadError, match=r"flat\.safetensors: tensor 'model\.diffusion_model\.input_blocks\.0\.0"
                                             r"\.weight' has shape \(3,\)"):
        read_checkpoint(path)

"""Streaming readers and writer: exact values, honest errors, the SD 1.5 block table."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from merge_fixtures import random_state
from safetensors.torch import load_file

from emaki.errors import EmakiError, ModelLoadError, UnsafeFileError
from emaki.merge.blocks import ALL_BLOCKS, UNET_BLOCKS, block_of
from emaki.merge.sources import InMemorySource, TensorInfo, open_source
from emaki.merge.writer import SafetensorsWriter


def read_all(source, key):
    return source.read(key, 0, source.info(key).numel).clone().reshape(source.info(key).shape)


def test_safetensors_and_ckpt_sources_read_exact_values(make_model):
    state = random_state(1, torch.float32, ema=True)
    st = open_source(make_model("a.safetensors", 1, state=state))
    ck = open_source(make_model("a.ckpt", 1, state=state, fmt="ckpt"))
    try:
        assert set(st.keys()) == set(ck.keys()) == set(state)  # old text-encoder names normalised
        for key in (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "model_ema.num_updates",
            "model.diffusion_model.out.2.bias",
        ):
            assert torch.equal(read_all(ck, key), state[key]) and torch.equal(
                read_all(st, key), state[key]
            )
        key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
        assert torch.equal(ck.read(key, 5, 7), state[key].reshape(-1)[5:12])
    finally:
        st.close()
        ck.close()


def test_ckpt_views_and_legacy_pickles_fall_back_to_a_whole_load(tmp_path):
    base = torch.arange(12.0)
    torch.save(
        {"state_dict": {"model.diffusion_model.x": base[2:8].reshape(2, 3).t()}},
        tmp_path / "view.ckpt",
    )
    torch.save(
        {"model.diffusion_model.y": base},
        tmp_path / "old.ckpt",
        _use_new_zipfile_serialization=False,
    )
    view, old = open_source(tmp_path / "view.ckpt"), open_source(tmp_path / "old.ckpt")
    assert isinstance(view, InMemorySource) and isinstance(old, InMemorySource)
    assert torch.equal(read_all(view, "model.diffusion_model.x"), base[2:8].reshape(2, 3).t())
    assert torch.equal(read_all(old, "model.diffusion_model.y"), base)


def test_a_pickle_asking_for_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeFileError, match="evil.ckpt: refused to load"):
        open_source(tmp_path / "evil.ckpt")


def _with_header(tmp_path, header: dict, data: bytes = b"\0" * 16, name="bad.safetensors"):
    text = json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, "has 12 bytes, its shape"),
        (
            {"x": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}},
            "truncated safetensors file",
        ),
        ({"x": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, "unknown 'Q4'"),
        (
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            "overlap",
        ),
        ({"x": {"shape": [2]}}, "lacks or has an unknown 'dtype'"),
    ],
)
def test_corrupt_headers_are_named(tmp_path, header, message):
    with pytest.raises(ModelLoadError, match=message):
        open_source(_with_header(tmp_path, header))


def test_unparseable_header_and_empty_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"{not json}" + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="junk.safetensors: corrupt safetensors header"):
        open_source(path)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        open_source(tmp_path / "empty.ckpt")
    with pytest.raises(ModelLoadError, match="no such file"):
        open_source(tmp_path / "missing.ckpt")


def test_writer_streams_a_file_safetensors_reads_back(tmp_path):
    tensors = {
        "b": torch.randn(5, 3).to(torch.bfloat16),
        "a": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(4, dtype=torch.float16),
    }
    entries = [(k, TensorInfo(v.dtype, tuple(v.shape))) for k, v in tensors.items()]
    with SafetensorsWriter(tmp_path / "w.safetensors", entries, {"k": "v"}) as w:
        for value in tensors.values():
            flat = value.reshape(-1)
            w.write(flat[:2])
            w.write(flat[2:])
        w.commit()
    back = load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not private


def test_writer_refuses_a_short_file_and_leaves_nothing(tmp_path):
    entries = [("x", TensorInfo(torch.float32, (4,)))]
    with (
        pytest.raises(EmakiError, match="wrote 8 data bytes, expected 16"),
        SafetensorsWriter(tmp_path / "w.safetensors", entries, {}) as w,
    ):
        w.write(torch.zeros(2))
        w.commit()
    assert list(tmp_path.iterdir()) == []


def test_every_sd15_key_has_its_block():
    """The table on the real SD 1.5 layout: 25 UNet blocks + TE + VAE, EMA keys alike."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emaki.models.configs import sd15_config
    from emaki.models.convert import components_to_ldm

    c = sd15_config()
    with init_empty_weights():
        state = components_to_ldm(
            UNet2DConditionModel(**c.unet),
            AutoencoderKL(**c.vae),
            CLIPTextModel(CLIPTextConfig(**c.text_encoder)),
            c.unet,
            c.vae,
        )
    blocks = {key: block_of(key) for key in state}
    assert None not in blocks.values()
    assert set(blocks.values()) == set(ALL_BLOCKS)
    for key, block in blocks.items():
        if key.startswith("model.diffusion_model."):
            assert block in UNET_BLOCKS
            assert block_of("model_ema." + "".join(key.split(".")[1:])) == block, key
    assert blocks["model.diffusion_model.time_embed.0.weight"] == "IN00"
    assert blocks["model.diffusion_model.out.2.weight"] == "OUT11"
    assert blocks["model.diffusion_model.output_blocks.2.1.conv.weight"] == "OUT02"
    assert blocks["model.diffusion_model.input_blocks.11.0.out_layers.3.weight"] == "IN11"

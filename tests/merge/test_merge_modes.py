"""The streaming merger: A1111's formulas and key handling, bit for bit, in bounded memory."""

from __future__ import annotations

import json

import pytest
import torch
from merge_fixtures import POSITION_IDS, random_state
from safetensors import safe_open
from safetensors.torch import load_file

from emaki.errors import EmakiError, ModelLoadError
from emaki.merge import InputRef, MergeError, MergeRecipe, block_of, merge
from emaki.merge.blocks import UNET_BLOCKS
from emaki.merge.sources import _RangeSource

UNET_KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
TE_KEY = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
VAE_KEY = "first_stage_model.decoder.conv_in.weight"


def reference_weighted_sum(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """A naive whole-tensor merge with fp32 math, as A1111 computes it."""
    return (1 - alpha) * a.float() + alpha * b.float()


def recipe(mode: str, *paths, **options) -> MergeRecipe:
    refs = [InputRef(str(p)) for p in paths] + [None] * (3 - len(paths))
    return MergeRecipe(mode, refs[0], refs[1], refs[2], **options)


def test_weighted_sum_equals_fp32_math_rounded_once(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    # A slice size that cuts tensors at odd places must not change a single bit.
    merge(
        recipe("weighted-sum", a, b, alpha=0.3, dtype="fp16"),
        tmp_path / "out.safetensors",
        slice_elements=1000,
    )
    A, B, out = load_file(a), load_file(b), load_file(tmp_path / "out.safetensors")
    for key, value in A.items():
        if "model" in key and key != POSITION_IDS:
            assert torch.equal(out[key], reference_weighted_sum(value, B[key], 0.3).half()), key
        else:  # schedule buffers and position ids: A's, in A's dtype
            assert torch.equal(out[key], value) and out[key].dtype == value.dtype, key


def test_add_difference_and_keys_missing_from_c(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    c_state = random_state(3)
    del c_state[TE_KEY]
    c = make_model("c.safetensors", 3, state=c_state)
    merge(recipe("add-difference", a, b, c, alpha=0.7), tmp_path / "out.safetensors")
    A, B, C, out = load_file(a), load_file(b), load_file(c), load_file(tmp_path / "out.safetensors")
    key = UNET_KEY
    expected = (A[key].float() + 0.7 * (B[key].float() - C[key].float())).half()
    assert torch.equal(out[key], expected)
    assert torch.equal(out[TE_KEY], A[TE_KEY])  # B - C := 0 where C lacks the key


def test_key_handling_follows_a1111(make_model, tmp_path):
    a_state = random_state(1, ema=True)
    a_state["model.diffusion_model.only_in_a.weight"] = torch.ones(3, dtype=torch.float32)
    b_state = random_state(2, ema=True)
    b_state["model.diffusion_model.only_in_b.weight"] = torch.ones(3)
    b_state[POSITION_IDS] = torch.arange(77)[None] + 5
    a, b = (
        make_model("a.safetensors", 1, state=a_state),
        make_model("b.safetensors", 2, state=b_state),
    )
    merge(recipe("weighted-sum", a, b, alpha=0.5, dtype="fp16"), tmp_path / "out.safetensors")
    out = load_file(tmp_path / "out.safetensors")
    assert "model.diffusion_model.only_in_b.weight" not in out  # dropped (v1.10.1)
    assert (
        out["model.diffusion_model.only_in_a.weight"].dtype == torch.float16
    )  # kept, stored as asked
    assert torch.equal(out[POSITION_IDS], a_state[POSITION_IDS])  # never merged
    assert out["alphas_cumprod"].dtype == torch.float32  # non-model buffers keep their precision
    ema = "model_ema.diffusion_modelinput_blocks11proj_inweight"
    assert torch.equal(out[ema], reference_weighted_sum(a_state[ema], b_state[ema], 0.5).half())
    assert out["model_ema.num_updates"].dtype == torch.int64  # not a float: copied from A


def test_block_weights_and_text_encoder_and_vae_alphas(make_model, tmp_path):
    a, b = (
        make_model("a.safetensors", 1, dtype=torch.float32),
        make_model("b.safetensors", 2, dtype=torch.float32),
    )
    blocks = tuple(i / 24 for i in range(25))
    r = recipe(
        "weighted-sum", a, b, alpha=0.5, blocks=blocks, text_encoder_alpha=0.1, vae_alpha=0.9
    )
    merge(r, tmp_path / "out.safetensors")
    A, B, out = load_file(a), load_file(b), load_file(tmp_path / "out.safetensors")
    seen = set()
    for key in A:
        block = block_of(key)
        if "model" not in key or key == POSITION_IDS or block is None:
            continue
        alpha = {"TE": 0.1, "VAE": 0.9}.get(
            block, blocks[UNET_BLOCKS.index(block)] if block in UNET_BLOCKS else 0.5
        )
        assert torch.equal(out[key], reference_weighted_sum(A[key], B[key], alpha)), key
        seen.add(block)
    assert seen >= set(UNET_BLOCKS) | {"TE", "VAE"}
    assert out[TE_KEY].dtype == torch.float32  # no dtype asked: the inputs' dtype


def test_ckpt_and_safetensors_inputs_mixed_dtypes(make_model, tmp_path):
    a = make_model(
        "a.ckpt", 1, dtype=torch.float32, fmt="ckpt"
    )  # state_dict wrapper, old text keys
    b = make_model("b.safetensors", 2, dtype=torch.bfloat16)
    merge(recipe("weighted-sum", a, b, alpha=0.25, dtype="bf16"), tmp_path / "out.safetensors")
    A, B, out = (
        random_state(1, torch.float32),
        load_file(b),
        load_file(tmp_path / "out.safetensors"),
    )
    assert torch.equal(
        out[TE_KEY], reference_weighted_sum(A[TE_KEY], B[TE_KEY], 0.25).to(torch.bfloat16)
    )
    assert out[UNET_KEY].dtype == torch.bfloat16


def test_no_interpolation_converts_bakes_vae_and_discards(make_model, tmp_path):
    a = make_model("a.safetensors", 1, dtype=torch.float32)
    vae_state = {
        k[len("first_stage_model.") :]: v * 0 + 1
        for k, v in random_state(9, torch.float32).items()
        if k.startswith("first_stage_model.")
    }
    vae_state["loss.discriminator.weight"] = torch.ones(2)
    vae = tmp_path / "anime.vae.pt"
    torch.save({"state_dict": vae_state}, vae)
    r = recipe(
        "no-interpolation",
        a,
        dtype="fp16",
        vae=InputRef(str(vae)),
        discard=r"^model_ema\.|attn2\.to_k",
    )
    result = merge(r, tmp_path / "out.safetensors")
    out = load_file(tmp_path / "out.safetensors")
    assert torch.equal(out[VAE_KEY], torch.ones_like(out[VAE_KEY]))  # baked
    assert out[VAE_KEY].dtype == torch.float16
    assert not any("attn2.to_k" in k for k in out)
    assert "first_stage_model.loss.discriminator.weight" not in out
    a1111 = json.loads(result.metadata["sd_merge_recipe"])
    assert a1111["interp_method"] == "No interpolation" and a1111["bake_in_vae"] == "anime.vae.pt"
    assert a1111["save_as_half"] is True and a1111["discard_weights"] == r"^model_ema\.|attn2\.to_k"


def test_inpainting_a_merges_first_four_channels(make_model, tmp_path):
    a_state = random_state(1, in_channels=9)
    a, b = make_model("inpaint.safetensors", 1, state=a_state), make_model("b.safetensors", 2)
    result = merge(recipe("weighted-sum", a, b, alpha=0.5), tmp_path / "out.safetensors")
    key = "model.diffusion_model.input_blocks.0.0.weight"
    out, B = load_file(tmp_path / "out.safetensors"), load_file(b)
    assert out[key].shape[1] == 9
    assert torch.equal(
        out[key][:, :4], reference_weighted_sum(a_state[key][:, :4], B[key], 0.5).half()
    )
    assert torch.equal(out[key][:, 4:], a_state[key][:, 4:])
    assert json.loads(result.metadata["sd_merge_recipe"])["is_inpainting"] is True
    with pytest.raises(MergeError, match="A must be the inpainting model"):
        merge(recipe("weighted-sum", b, a, alpha=0.5), tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_clear_errors(make_model, tmp_path):
    a = make_model("a.safetensors", 1)
    sd2 = make_model("sd2.safetensors", 2, cross_attention_dim=1024)
    with pytest.raises(MergeError, match="SD 2.x"):
        merge(recipe("weighted-sum", a, sd2), tmp_path / "out.safetensors")
    wide = make_model("wide.safetensors", 3, cross_attention_dim=64)
    with pytest.raises(MergeError, match="different architectures"):
        merge(recipe("weighted-sum", a, wide), tmp_path / "out.safetensors")
    odd_state = random_state(4)
    odd_state[TE_KEY] = torch.zeros(3, 3, dtype=torch.float16)
    odd = make_model("odd.safetensors", 4, state=odd_state)
    with pytest.raises(MergeError, match=r"shape mismatch for 'cond_stage_model.*fc1.weight'"):
        merge(recipe("weighted-sum", a, odd), tmp_path / "out.safetensors")
    with pytest.raises(MergeError, match="no such file"):
        merge(
            recipe("weighted-sum", a, tmp_path / "missing.safetensors"),
            tmp_path / "out.safetensors",
        )
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(a.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="corrupt.safetensors"):
        merge(recipe("weighted-sum", a, corrupt), tmp_path / "out.safetensors")
    vae_only = make_model("vae.safetensors", 5, state={"encoder.conv_in.weight": torch.zeros(1)})
    with pytest.raises(MergeError, match="not an SD 1.x checkpoint"):
        merge(recipe("weighted-sum", vae_only, a), tmp_path / "out.safetensors")
    with pytest.raises(MergeError, match="takes 3 models"):
        recipe("add-difference", a, a)
    with pytest.raises(MergeError, match="is one of the merge's inputs"):
        merge(recipe("weighted-sum", a, a), a, overwrite=True)
    with pytest.raises(MergeError, match="already exists"):
        merge(recipe("weighted-sum", a, a), a)
    assert isinstance(MergeError("x"), EmakiError)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "a.safetensors",
            "sd2.safetensors",
            "wide.safetensors",
            "odd.safetensors",
            "corrupt.safetensors",
            "vae.safetensors",
        ]
    )


def test_interrupted_merge_leaves_nothing(make_model, tmp_path, monkeypatch):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    calls = {"n": 0}
    real = _RangeSource.read

    def flaky(self, key, start, count):
        calls["n"] += 1
        if calls["n"] == 200:
            raise KeyboardInterrupt
        return real(self, key, start, count)

    monkeypatch.setattr(_RangeSource, "read", flaky)
    with pytest.raises(KeyboardInterrupt):
        merge(recipe("weighted-sum", a, b), tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


def test_memory_stays_at_a_few_slices(make_model, tmp_path, monkeypatch):
    """No read ever asks for more than one slice, whatever the tensor size."""
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    largest = {"n": 0}
    real = _RangeSource.read

    def spy(self, key, start, count):
        largest["n"] = max(largest["n"], count)
        return real(self, key, start, count)

    monkeypatch.setattr(_RangeSource, "read", spy)
    biggest_tensor = max(v.numel() for v in load_file(a).values())
    merge(recipe("weighted-sum", a, b), tmp_path / "out.safetensors", slice_elements=4096)
    assert biggest_tensor > 4096 * 4
    assert largest["n"] <= 4096 * 8  # slices, plus whole-tensor work only for the small conv_in


def test_output_is_a_valid_aligned_safetensors_file(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    merge(recipe("weighted-sum", a, b, dtype="fp16"), tmp_path / "out.safetensors")
    path = tmp_path / "out.safetensors"
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    for key, entry in header.items():
        if key != "__metadata__":
            itemsize = {"F16": 2, "F32": 4, "I64": 8}[entry["dtype"]]
            assert entry["data_offsets"][0] % itemsize == 0, key
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["format"] == "pt"
        assert len(list(f.keys())) == len(load_file(a))


def test_input_metadata_merges_into_sd_merge_models(make_model, tmp_path):
    parent_models = {
        "f" * 64: {"name": "grandparent.ckpt", "legacy_hash": "12345678", "sd_merge_recipe": None}
    }
    parent_recipe = {"type": "webui", "interp_method": "Weighted sum", "multiplier": 0.5}
    a = make_model(
        "a.safetensors",
        1,
        metadata={
            "format": "pt",
            "sd_merge_models": json.dumps(parent_models),
            "sd_merge_recipe": json.dumps(parent_recipe),
        },
    )
    b = make_model("b.safetensors", 2)
    result = merge(recipe("weighted-sum", a, b, alpha=0.4), tmp_path / "out.safetensors")
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    models = json.loads(meta["sd_merge_models"])
    sha_a, sha_b = result.recipe.a.sha256, result.recipe.b.sha256  # type: ignore[union-attr]
    assert list(models) == [sha_a, "f" * 64, sha_b]
    assert (
        models[sha_a]["sd_merge_recipe"] == parent_recipe
        and models[sha_a]["name"] == "a.safetensors"
    )
    assert len(models[sha_b]["legacy_hash"]) == 8
    a1111 = json.loads(meta["sd_merge_recipe"])
    assert a1111["primary_model_hash"] == sha_a and a1111["secondary_model_hash"] == sha_b
    assert a1111["tertiary_model_hash"] is None and a1111["custom_name"] == "0.6(a) + 0.4(b)"
    assert json.loads(meta["emaki_merge_recipe"]) == result.recipe.to_dict()

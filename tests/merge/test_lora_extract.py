"""`emaki lora extract`: a baked rank-8 LoRA comes back within 1 %; kohya's file layout and
metadata; the LoRA names of checkpoint keys; lineage recognises a LoRA-baked model."""

from __future__ import annotations

import json

import pytest
import torch
from merge_fixtures import mini_sd15_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_merge_lora import random_lora, shapes_of
from typer.testing import CliRunner

import emaki.cli.lora  # registers `emaki lora`
import emaki.cli.merge  # noqa: F401  (registers `emaki merge`, `emaki lineage`)
from emaki.cli import app
from emaki.merge import InputRef, MergeRecipe, merge, open_source, trace_lineage
from emaki.merge.blocks import ALL_BLOCKS, block_of
from emaki.merge.recipe import LoraRef
from emaki.models.convert import unet_to_ldm
from emaki.models.hashes import tensor_data_hash
from emaki.networks.lora import LoraLibrary, load_lora, model_targets
from emaki.networks.lora.extract import (
    CheckpointNames,
    extract_lora,
    kohya_modules,
    low_rank_factors,
    resnets_per_level,
    unet_module_path,
)

runner = CliRunner()
#: The blocks kohya's LoRA reaches: not IN00 (conv_in, time embedding) nor the VAE.
LORA_BLOCKS = set(ALL_BLOCKS) - {"IN00", "VAE"}


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def baked(make_model, tmp_path):
    """(base, model with a random rank-8 LoCon baked in by `emaki merge --lora`, the LoRA)."""
    base = make_model("base.safetensors", 1)
    lora = tmp_path / "secret.safetensors"
    save_file(random_lora(shapes_of(load_file(base)), 8, seed=4), str(lora))
    out = tmp_path / "baked.safetensors"
    result = run("merge", base, "--lora", f"{lora}:1", "--dtype", "fp16", "--out", out)
    assert result.exit_code == 0, result.output
    return base, out, lora


def test_extract_recovers_a_baked_rank8_lora_within_one_percent(baked, tmp_path):
    base, model, truth = baked
    out = tmp_path / "extracted.safetensors"
    result = run("lora", "extract", model, base, "--rank", "8", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("block") and lines[-1] == str(out)
    printed = {line.split()[0]: float(line.split()[-1].rstrip("%")) for line in lines[1:-1]}
    assert set(printed) == LORA_BLOCKS | {"all"}
    assert all(value < 1.0 for value in printed.values())  # percent: fp16 rounding only

    original, extracted = load_lora(truth), load_lora(out)
    assert extracted.modules.keys() == original.modules.keys()
    weights = load_file(base)
    names = CheckpointNames(weights)
    for name, module in original.modules.items():
        weight = weights[names.find(name).weight_key].float()
        want, _ = module.delta(weight, 1.0)
        got, _ = extracted.modules[name].delta(weight, 1.0)
        assert float((got - want).norm() / want.norm()) <= 0.01, name


def test_file_layout_and_metadata_are_kohyas(baked, tmp_path):
    base, model, _ = baked
    out = tmp_path / "x.safetensors"
    result = run("lora", "extract", model, base, "-r", "4", "--conv-rank", "2", "-o", out,
                 "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    tensors = load_file(out)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "4.0")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_output_name"] == "x"
    assert meta["sshs_model_hash"] == tensor_data_hash(out)
    assert LoraLibrary().shorthash(out) == meta["sshs_model_hash"][:12]
    proj = "lora_unet_down_blocks_0_attentions_0_proj_in"
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    fc1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    assert tensors[f"{proj}.lora_down.weight"].shape[:2] == (4, 32)  # 1x1 conv: rank 4
    assert tensors[f"{proj}.lora_up.weight"].shape[1:] == (4, 1, 1)
    assert tensors[f"{conv}.lora_down.weight"].shape == (2, 32, 3, 3)  # 3x3: the conv rank
    assert tensors[f"{conv}.lora_up.weight"].shape == (32, 2, 1, 1)
    assert float(tensors[f"{conv}.alpha"]) == 2.0 and float(tensors[f"{fc1}.alpha"]) == 4.0
    assert tensors[f"{fc1}.lora_up.weight"].dtype == torch.bfloat16
    no_conv = run("lora", "extract", model, base, "-r", "4", "--conv-rank", "0", "-o",
                  tmp_path / "y.safetensors")
    assert no_conv.exit_code == 0, no_conv.output
    assert not any("resnets" in key for key in load_file(tmp_path / "y.safetensors"))
    again = run("lora", "extract", model, base, "-r", "4", "-o", out)
    assert "already exists" in str(again.exception)


def test_an_unchanged_text_encoder_is_left_out(make_model, tmp_path):
    base = make_model("base.safetensors", 1)
    state = load_file(base)
    lora = tmp_path / "unet.safetensors"
    save_file(random_lora(shapes_of(state), 2, seed=1, text_encoder=False), str(lora))
    model = merge(MergeRecipe("no-interpolation", InputRef(str(base)), dtype="fp16",
                              loras=(LoraRef(str(lora)),)), tmp_path / "m.safetensors").path
    extracted = extract_lora(open_source(model), open_source(base), rank=2)
    assert not extracted.text_encoder_dropped and extracted.unchanged  # TE identical: skipped
    assert all(layer.component == "unet" for layer in extracted.layers)
    # A text encoder that differs only by rounding (≤ 0.01, kohya's min_diff) is left out too.
    noisy = {
        key: (value.float() + 0.004).half()
        if key.startswith("cond_stage_model.") and key.endswith("proj.weight") else value
        for key, value in load_file(model).items()
    }
    save_file(noisy, str(tmp_path / "noisy.safetensors"))
    dropped = extract_lora(open_source(tmp_path / "noisy.safetensors"), open_source(base), rank=2)
    assert dropped.text_encoder_dropped
    assert not any(key.startswith("lora_te_") for key in dropped.tensors)


def test_low_rank_factors_are_the_truncated_svd():
    g = torch.Generator().manual_seed(0)
    for shape in ((24, 70), (70, 24)):
        matrix = torch.randn(*shape, generator=g)
        up, down = low_rank_factors(matrix, 5)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        best = (u[:, :5] * s[:5]) @ vh[:5]
        assert torch.allclose(up @ down, best, atol=1e-4)
        assert torch.allclose(down @ down.T, torch.eye(5), atol=1e-4)  # down = V_rᵀ (kohya)
        assert torch.allclose(up.norm(dim=0), s[:5], atol=1e-4)  # up = U_r·S_r


def test_checkpoint_names_invert_the_ldm_conversion(tiny_components, tiny_ldm_state):
    """Every diffusers UNet path comes back from its LDM key, in the tiny (1 ResNet per level,
    2 levels) and the mini SD 1.5 (2 per level, 4 levels) structures, and each module's kohya
    name is the one the loaded model's targets know it by."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    config = mini_sd15_config()
    with init_empty_weights():
        mini = UNet2DConditionModel(**config.unet)
    for unet, unet_config in ((tiny_components.unet, tiny_components.config.unet), (mini, config.unet)):
        params = [name for name, _ in unet.named_parameters()]
        ldm = unet_to_ldm(dict.fromkeys(params, torch.empty(0)), unet_config)
        per_level = resnets_per_level("model.diffusion_model." + key for key in ldm)
        assert per_level == unet_config["layers_per_block"]
        for key, diffusers in zip(ldm, params, strict=True):
            assert unet_module_path(key.rsplit(".", 1)[0], per_level) == diffusers.rsplit(".", 1)[0]
    targets = model_targets(tiny_components)
    names = CheckpointNames(tiny_ldm_state)
    assert len(names.modules) == sum(key.endswith(".weight") for key in tiny_ldm_state
                                     if not key.startswith("first_stage_model."))
    for module in names.modules:
        target = targets.get(module.kohya_name)
        assert target is not None and target.path == module.path, module
        assert names.find("model.diffusion_model." + module.ldm.split("diffusion_model.")[-1]
                          if module.component == "unet" else module.kohya_name) == module
    kohya = kohya_modules(names, shapes_of(tiny_ldm_state), convolutions=False)
    assert {m.path.rsplit(".", 1)[-1] for m in kohya} == {
        "proj_in", "proj_out", "to_q", "to_k", "to_v", "0", "proj", "2",
        "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}


def test_lineage_sees_base_plus_a_lora_of_rank_8(baked, make_model, tmp_path):
    base, model, _ = baked
    other = make_model("other.safetensors", 2)
    result = trace_lineage(model, [base, other])
    diff = result.low_rank[str(base)]
    assert diff.looks_like_lora and diff.rank == 8 and diff.changed == diff.low_rank > 0
    assert not result.low_rank[str(other)].looks_like_lora
    assert "looks like base + a LoRA of rank ~8" in "\n".join(result.summary())
    assert result.to_dict()["low_rank"][str(base)]["rank"] == 8
    # A weighted sum is not a LoRA: its difference is full-rank.
    mix = merge(MergeRecipe("weighted-sum", InputRef(str(base)), InputRef(str(other)), alpha=0.1,
                            dtype="fp16"), tmp_path / "mix.safetensors").path
    mixed = trace_lineage(mix, [base, other])
    assert not any(d.looks_like_lora for d in mixed.low_rank.values())
    assert not any("LoRA" in line for line in mixed.summary())
    text = run("lineage", model, "-c", base).stdout
    assert "looks like base + a LoRA of rank ~8" in text


def test_block_errors_group_by_merge_block(baked):
    base, model, _ = baked
    extracted = extract_lora(open_source(model), open_source(base), rank=2)
    errors = extracted.relative_errors(block_of)
    assert set(errors) == LORA_BLOCKS
    assert all(0.3 < value < 1 for value in errors.values())  # rank 2 of a rank-8 change
    assert extracted.relative_error == pytest.approx(
        (sum(f.residual for f in extracted.layers) / sum(f.energy for f in extracted.layers)) ** 0.5)

"""Baking LoRAs into checkpoints in the streaming merger: every tensor equals W + ΣΔW (A1111's
arithmetic, checked against applying the same LoRAs to the loaded model), alone or after a
merge; recipes record the LoRAs' hashes and replay; `emaki merge --lora`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from merge_fixtures import random_state
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import emaki.cli.merge  # noqa: F401  (registers the commands)
from emaki.cli import app
from emaki.merge import InputRef, MergeError, MergeRecipe, load_recipe, merge
from emaki.merge.recipe import LoraRef
from emaki.models.checkpoint import read_checkpoint
from emaki.models.convert import components_to_ldm
from emaki.models.loader import components_from_ldm
from emaki.networks.lora import ChosenLora, LoraLibrary, apply_loras, load_lora, model_targets
from emaki.networks.lora.extract import CheckpointNames, kohya_modules

runner = CliRunner()
PROJ_IN = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
TE_FC1 = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"


def shapes_of(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def random_lora(
    shapes: dict[str, tuple[int, ...]],
    rank: int,
    seed: int,
    *,
    alpha: float | None = None,
    scale: float = 0.1,
    convolutions: bool = True,
    text_encoder: bool = True,
) -> dict[str, torch.Tensor]:
    """A kohya LoRA (LoCon with `convolutions`) over every layer kohya covers in a checkpoint
    of these shapes: ΔW entries of about `scale` (·alpha/rank), stored in fp16."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in kohya_modules(CheckpointNames(shapes), shapes, convolutions=convolutions):
        if module.component == "text_encoder" and not text_encoder:
            continue
        out, inp, *kernel = shapes[module.weight_key]
        name = module.kohya_name
        tensors[f"{name}.lora_down.weight"] = (torch.randn(rank, inp, *kernel, generator=g) * scale).half()
        up_shape = (out, rank, 1, 1) if kernel else (out, rank)
        tensors[f"{name}.lora_up.weight"] = (torch.randn(*up_shape, generator=g) / rank**0.5).half()
        tensors[f"{name}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    return tensors


def mixed_lora(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """One module of every type the LoRA package applies, under kohya, LDM and PEFT names."""
    g = torch.Generator().manual_seed(11)

    def r(*shape: int, s: float = 0.1) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * s).half()

    unet = "model.diffusion_model."
    te = "cond_stage_model.transformer.text_model.encoder.layers.0."
    attn = "down_blocks_1_attentions_0_transformer_blocks_0_"
    out_q, in_q = shapes[unet + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"]
    out_k, in_k = shapes[unet + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"]
    out_ff, in_ff = shapes[unet + "input_blocks.4.1.transformer_blocks.0.ff.net.2.weight"]
    proj = shapes[PROJ_IN]
    proj_out = shapes[unet + "middle_block.1.proj_out.weight"]
    conv = shapes[unet + "input_blocks.2.0.in_layers.2.weight"]
    fc1 = shapes[TE_FC1]
    q_proj = shapes[te + "self_attn.q_proj.weight"]
    norm = shapes[unet + "input_blocks.1.1.norm.weight"]
    return {
        # LDM name, a plain LoRA overlapping the kohya LoRA of the other file
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": r(2, proj[1], 1, 1),
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": r(proj[0], 2, 1, 1, s=1),
        # PEFT spelling
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": r(2, in_q),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": r(out_q, 2, s=1),
        # LoHa
        f"lora_unet_{attn}attn2_to_k.hada_w1_a": r(out_k, 2, s=0.5),
        f"lora_unet_{attn}attn2_to_k.hada_w1_b": r(2, in_k, s=0.5),
        f"lora_unet_{attn}attn2_to_k.hada_w2_a": r(out_k, 2, s=0.5),
        f"lora_unet_{attn}attn2_to_k.hada_w2_b": r(2, in_k, s=0.5),
        f"lora_unet_{attn}attn2_to_k.alpha": torch.tensor(1.0),
        # LoKr
        f"lora_unet_{attn}ff_net_2.lokr_w1": r(4, 4, s=1),
        f"lora_unet_{attn}ff_net_2.lokr_w2": r(out_ff // 4, in_ff // 4),
        # LoRA with DoRA magnitudes (per output row), on a 1x1 conv
        "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight": r(2, proj_out[1], 1, 1),
        "lora_unet_mid_block_attentions_0_proj_out.lora_up.weight": r(proj_out[0], 2, 1, 1, s=1),
        "lora_unet_mid_block_attentions_0_proj_out.dora_scale": r(proj_out[0], s=1).abs() + 1,
        # CP-decomposed LoCon on a 3x3 ResNet conv
        "lora_unet_down_blocks_0_resnets_1_conv1.lora_down.weight": r(2, conv[1], 1, 1),
        "lora_unet_down_blocks_0_resnets_1_conv1.lora_mid.weight": r(2, 2, 3, 3),
        "lora_unet_down_blocks_0_resnets_1_conv1.lora_up.weight": r(conv[0], 2, 1, 1, s=1),
        # norm layer: weight and bias
        "lora_unet_down_blocks_0_attentions_0_norm.w_norm": r(*norm),
        "lora_unet_down_blocks_0_attentions_0_norm.b_norm": r(*norm),
        # text encoder: IA³, a full difference with its bias, OFT
        "lora_te_text_model_encoder_layers_0_mlp_fc1.weight": r(fc1[0], s=1),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.diff": r(*q_proj),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.diff_b": r(q_proj[0]),
        "lora_te_text_model_encoder_layers_0_self_attn_k_proj.oft_blocks": r(2, q_proj[0] // 2, q_proj[0] // 2),
        "lora_te_text_model_encoder_layers_0_self_attn_k_proj.alpha": torch.tensor(1.0),
        # no layer of an SD 1.x model: reported, not baked
        "lora_unet_not_a_layer.lora_down.weight": r(2, 4),
        "lora_unet_not_a_layer.lora_up.weight": r(4, 2),
        # an embedding bundled in the LoRA: not a weight of the checkpoint
        "bundle_emb.sparkle.string_to_param.*": r(1, fc1[1]),
    }


@pytest.fixture
def make_lora(tmp_path):
    def make(name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        path = tmp_path / name
        save_file(tensors, str(path), metadata=metadata or {"ss_base_model_version": "sd_v1"})
        return path

    return make


def reference_apply(checkpoint: Path, loras: list[tuple[Path, float, float]]) -> dict[str, torch.Tensor]:
    """The checkpoint loaded as a model (float32), the LoRAs applied by `apply_loras` (what a
    generation does), converted back to the LDM layout."""
    state, config = read_checkpoint(checkpoint)
    components = components_from_ldm(state, config, str(checkpoint))

    def replace(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
        setattr(module, name, torch.nn.Parameter(value, requires_grad=False))

    chosen = [ChosenLora(load_lora(path), te=te, unet=unet) for path, te, unet in loras]
    apply_loras(chosen, model_targets(components), replace)
    c = components
    return components_to_ldm(c.unet, c.vae, c.text_encoder, config.unet, config.vae)


def assert_within_fp16_rounding(actual: torch.Tensor, exact: torch.Tensor, key: str) -> None:
    """`actual` (fp16) is `exact` (float32) rounded: at most one fp16 step away."""
    assert actual.dtype == torch.float16 and actual.shape == exact.shape, key
    step = (torch.nextafter(actual.abs(), torch.tensor(float("inf"), dtype=torch.float16))
            - actual.abs()).float()
    assert bool(((actual.float() - exact).abs() <= step).all()), key


def test_baked_tensors_equal_w_plus_the_sum_of_every_loras_delta(make_model, make_lora, tmp_path):
    base = make_model("base.safetensors", 1)
    shapes = shapes_of(load_file(base))
    plain = make_lora("plain.safetensors", random_lora(shapes, 4, seed=3, alpha=2.0))
    mixed = make_lora("mixed.safetensors", mixed_lora(shapes))
    recipe = MergeRecipe(
        "no-interpolation",
        InputRef(str(base)),
        dtype="fp16",
        loras=(LoraRef(str(plain), te=0.8, unet=0.8), LoraRef(str(mixed), te=0.5, unet=1.2)),
    )
    # Slices that cut rows of every layer at odd places.
    result = merge(recipe, tmp_path / "baked.safetensors", slice_elements=1000)
    out = load_file(result.path)
    source = load_file(base)
    reference = reference_apply(base, [(plain, 0.8, 0.8), (mixed, 0.5, 1.2)])
    changed = 0
    for key, value in out.items():
        if key in reference:
            assert_within_fp16_rounding(value, reference[key].float(), key)
        else:  # position ids, schedule buffers: not model weights
            assert torch.equal(value, source[key]), key
        changed += not torch.equal(value, source[key])
    layers = len(kohya_modules(CheckpointNames(shapes), shapes, convolutions=True))
    assert changed == layers + 3  # + the norm's weight and bias, the q_proj bias
    assert set(out) == set(source)
    assert result.lora_unmatched == {
        "mixed": ["lora_unet_not_a_layer.lora_down.weight", "lora_unet_not_a_layer.lora_up.weight"]
    }


def test_bake_after_a_weighted_sum_patches_the_merged_weights(make_model, make_lora, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    shapes = shapes_of(load_file(a))
    lora = make_lora("style.safetensors", random_lora(shapes, 4, seed=5))
    dora = make_lora("dora.safetensors", {
        k: v for k, v in mixed_lora(shapes).items() if "proj_out" in k
    })
    plain = merge(MergeRecipe("weighted-sum", InputRef(str(a)), InputRef(str(b)), alpha=0.3,
                              dtype="fp32"), tmp_path / "merged32.safetensors").path
    baked = merge(
        MergeRecipe("weighted-sum", InputRef(str(a)), InputRef(str(b)), alpha=0.3, dtype="fp16",
                    loras=(LoraRef(str(lora), te=0.0, unet=0.7), LoraRef(str(dora)))),
        tmp_path / "baked.safetensors",
    ).path
    merged, out = load_file(plain), load_file(baked)
    # The LoRAs act on (1-α)A + αB (DoRA renormalises that weight), exactly as on a model
    # loaded from the fp32 merge.
    reference = reference_apply(plain, [(lora, 0.0, 0.7), (dora, 1.0, 1.0)])
    for key, value in out.items():
        if key in reference:
            assert_within_fp16_rounding(value, reference[key].float(), key)
    assert torch.equal(out[TE_FC1], merged[TE_FC1].half())  # TE multiplier 0: the merge only
    assert not torch.equal(out[PROJ_IN], merged[PROJ_IN].half())


def test_recipe_records_the_loras_hashes_and_replays(make_model, make_lora, tmp_path):
    base = make_model("base.safetensors", 1)
    lora = make_lora("detail.safetensors", random_lora(shapes_of(load_file(base)), 2, seed=1))
    recipe = MergeRecipe("no-interpolation", InputRef(str(base)), dtype="fp16",
                         loras=(LoraRef(str(lora), te=0.5, unet=1.0, name="detail"),))
    first = merge(recipe, tmp_path / "one.safetensors")
    with safe_open(str(first.path), "pt") as f:
        meta = f.metadata()
    recorded = json.loads(meta["emaki_merge_recipe"])["loras"]
    shorthash = LoraLibrary().shorthash(lora)
    assert recorded == [{"path": str(lora.resolve()), "name": "detail", "hash": shorthash,
                         "te": 0.5, "unet": 1.0}]
    assert len(shorthash) == 12
    assert json.loads(meta["sd_merge_recipe"])["custom_name"] == "base + 0.5/1(detail)"
    again = merge(load_recipe(first.path), tmp_path / "two.safetensors")
    assert again.path.read_bytes() == first.path.read_bytes()
    # A recipe without LoRAs keeps the JSON it always had.
    assert "loras" not in MergeRecipe("no-interpolation", InputRef("x")).to_dict()
    # A different file under the recorded path is refused.
    make_lora("detail.safetensors", random_lora(shapes_of(load_file(base)), 2, seed=2))
    with pytest.raises(MergeError, match="LoRA hash .* differs from the recipe's"):
        merge(load_recipe(first.path), tmp_path / "three.safetensors")


def test_errors_name_the_lora(make_model, make_lora, tmp_path):
    base = make_model("base.safetensors", 1)
    shapes = shapes_of(load_file(base))
    wide = {k: (v[0] * 2, *v[1:]) for k, v in shapes.items()}  # another model's layer sizes
    other = make_lora("other.safetensors", random_lora(wide, 2, seed=1))
    with pytest.raises(MergeError, match="lora 'other'.*does not fit the model's"):
        merge(MergeRecipe("no-interpolation", InputRef(str(base)), loras=(LoraRef(str(other)),)),
              tmp_path / "o.safetensors")
    xl = make_lora("xl.safetensors", random_lora(shapes, 2, seed=1),
                   {"ss_base_model_version": "sdxl_base_v1-0"})
    with pytest.raises(MergeError, match="made for SDXL"):
        merge(MergeRecipe("no-interpolation", InputRef(str(base)), loras=(LoraRef(str(xl)),)),
              tmp_path / "o.safetensors")
    nothing = make_lora("nothing.safetensors", {"lora_unet_x.lora_up.weight": torch.ones(2, 1),
                                                "lora_unet_x.lora_down.weight": torch.ones(1, 2)})
    with pytest.raises(MergeError, match="none of its 1 modules names a layer"):
        merge(MergeRecipe("no-interpolation", InputRef(str(base)), loras=(LoraRef(str(nothing)),)),
              tmp_path / "o.safetensors")
    with pytest.raises(MergeError, match="no such file"):
        merge(MergeRecipe("no-interpolation", InputRef(str(base)),
                          loras=(LoraRef(str(tmp_path / "gone.safetensors")),)),
              tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_cli_bakes_loras_found_by_stem_alias_or_path(make_model, tmp_path):
    base = make_model("base.safetensors", 1)
    shapes = shapes_of(load_file(base))
    folder = Path(os.environ["EMAKI_HOME"]) / "loras" / "styles"
    folder.mkdir(parents=True)
    save_file(random_lora(shapes, 2, seed=1), str(folder / "ink_v2.safetensors"),
              metadata={"ss_output_name": "ink"})
    save_file(random_lora(shapes, 2, seed=2), str(tmp_path / "glow.safetensors"))
    out = tmp_path / "baked.safetensors"
    result = run("merge", base, "--lora", "ink:0.7", "--lora", f"{tmp_path / 'glow.safetensors'}:0.5:1",
                 "--dtype", "fp16", "--out", out)
    assert result.exit_code == 0, result.output
    recipe = load_recipe(out)
    assert recipe.mode == "no-interpolation"
    assert [(r.name, r.te, r.unet, Path(r.path).name) for r in recipe.loras] == [
        ("ink", 0.7, 0.7, "ink_v2.safetensors"),
        (str(tmp_path / "glow.safetensors"), 0.5, 1.0, "glow.safetensors"),
    ]
    expected = merge(
        MergeRecipe("no-interpolation", InputRef(str(base)), dtype="fp16",
                    loras=(LoraRef(str(folder / "ink_v2.safetensors"), 0.7, 0.7),
                           LoraRef(str(tmp_path / "glow.safetensors"), 0.5, 1.0))),
        tmp_path / "api.safetensors",
    ).path
    got, want = load_file(out), load_file(expected)
    assert got.keys() == want.keys() and all(torch.equal(v, want[k]) for k, v in got.items())
    missing = run("merge", base, "--lora", "nope:1", "--out", tmp_path / "x.safetensors")
    assert "--lora nope: no LoRA file by that name" in str(missing.exception)
    both = run("merge", "--recipe", out, "--lora", "ink", "--out", tmp_path / "x.safetensors")
    assert "drop --lora" in str(both.exception)


def test_a_bake_is_a_merge_input_like_any_other(make_model, make_lora, tmp_path):
    """A weighted sum of a baked model whose file is gone replays the bake from its recipe."""
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    lora = make_lora("l.safetensors", random_lora(shapes_of(load_file(a)), 2, seed=1))
    baked = merge(MergeRecipe("no-interpolation", InputRef(str(a)), dtype="fp16",
                              loras=(LoraRef(str(lora)),)), tmp_path / "baked.safetensors").path
    mix = merge(MergeRecipe("weighted-sum", InputRef(str(baked)), InputRef(str(b)), alpha=0.5),
                tmp_path / "mix.safetensors").path
    expected = mix.read_bytes()
    baked.unlink()
    again = merge(load_recipe(mix), tmp_path / "again.safetensors")
    assert again.rebuilt == [str(baked.resolve())] and again.path.read_bytes() == expected
    assert random_state(1).keys() == load_file(again.path).keys()

"""Applying LoRAs (issue 15): each module type against its formula on tiny tensors, stacking and
multipliers on a model, and whole generations on the demo model (weights restored after)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_runner import ONE_THREAD
from safetensors.torch import save_file

from emaki.engine import Cancel, Engine
from emaki.engine.networks import NETWORK_KINDS
from emaki.errors import Interrupted, ModelLoadError, ParamsError
from emaki.infotext import parse_infotext
from emaki.infotext_codec import decode_infotext
from emaki.models.convert import unet_to_ldm
from emaki.models.resolve import demo_model_path
from emaki.networks.lora import (
    IA3,
    ChosenLora,
    FullDiff,
    Hadamard,
    Kronecker,
    LoraLibrary,
    LoraUpDown,
    NormDiff,
    Orthogonal,
    apply_loras,
    load_lora,
    model_targets,
    network_module,
)
from emaki.params import GenerationParams
from emaki.workspace import Workspace


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


W = rand(8, 6)
CONV = rand(8, 6, 3, 3, seed=1)


# --- each type against its formula ---

def test_lora_is_up_down_times_alpha_over_rank_times_multiplier():
    up, down = rand(8, 2), rand(2, 6, seed=1)
    delta, bias = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0)}).delta(W, 0.8)
    assert torch.allclose(delta, 0.8 * (up @ down) * (1.0 / 2)) and bias is None
    no_alpha, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down}).delta(W, 1.0)
    assert torch.allclose(no_alpha, up @ down)
    scaled, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0),
                            "scale": torch.tensor(3.0)}).delta(W, 1.0)
    assert torch.allclose(scaled, 3 * up @ down)
    dyn, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down}).delta(W, 1.0, dyn=1)
    assert torch.allclose(dyn, up[:, :1] @ down[:1])


def test_locon_conv_and_cp_mid():
    down, up = rand(3, 6, 3, 3), rand(8, 3, 1, 1, seed=2)
    delta, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.5)}).delta(CONV, 1.0)
    expected = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 0.5
    assert torch.allclose(delta, expected, atol=1e-5)
    down1, mid = rand(3, 6, 1, 1, seed=3), rand(3, 3, 3, 3, seed=4)
    cp, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down1, "lora_mid.weight": mid}).delta(CONV, 2.0)
    expected = torch.zeros_like(CONV)
    for n in range(3):
        for m in range(3):
            expected += up[:, n, 0, 0][:, None, None, None] * mid[n, m][None, None] * down1[m, :, 0, 0][None, :, None, None]
    assert torch.allclose(cp, 2 * expected, atol=1e-5)


def test_loha_is_the_hadamard_product_of_two_low_rank_products():
    parts = {"hada_w1_a": rand(8, 2), "hada_w1_b": rand(2, 6, seed=1), "hada_w2_a": rand(8, 2, seed=2),
             "hada_w2_b": rand(2, 6, seed=3), "alpha": torch.tensor(1.0)}
    delta, _ = Hadamard(parts).delta(W, 0.5)
    expected = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"]) * 0.5 * 0.5
    assert torch.allclose(delta, expected, atol=1e-5)


def test_loha_cp_factors():
    a1, b1, t1 = rand(2, 8), rand(2, 6, seed=1), rand(2, 2, 3, 3, seed=2)
    a2, b2, t2 = rand(2, 8, seed=3), rand(2, 6, seed=4), rand(2, 2, 3, 3, seed=5)
    delta, _ = Hadamard({"hada_w1_a": a1, "hada_w1_b": b1, "hada_t1": t1, "hada_w2_a": a2, "hada_w2_b": b2,
                         "hada_t2": t2}).delta(CONV, 1.0)

    def tucker(t, a, b):  # t ×₀ aᵀ ×₁ bᵀ, step by step
        return torch.tensordot(torch.tensordot(t, a, dims=([0], [0])), b, dims=([0], [0])).permute(2, 3, 0, 1)

    assert torch.allclose(delta, tucker(t1, a1, b1) * tucker(t2, a2, b2), atol=1e-4)


def test_lokr_is_a_kronecker_product():
    w1, w2 = rand(2, 3), rand(4, 2, seed=1)
    full, _ = Kronecker({"lokr_w1": w1, "lokr_w2": w2, "alpha": torch.tensor(5.0)}).delta(W, 1.0)
    assert torch.allclose(full, torch.kron(w1, w2))  # both full: no rank, alpha ignored
    a, b = rand(4, 1, seed=2), rand(1, 2, seed=3)
    factored, _ = Kronecker({"lokr_w1": w1, "lokr_w2_a": a, "lokr_w2_b": b, "alpha": torch.tensor(0.5)}).delta(W, 2.0)
    assert torch.allclose(factored, 2 * 0.5 * torch.kron(w1, a @ b), atol=1e-6)
    c1, c2a, c2b, t2 = rand(2, 3, seed=4), rand(1, 4, seed=5), rand(1, 2, seed=6), rand(1, 1, 3, 3, seed=7)
    conv, _ = Kronecker({"lokr_w1": c1, "lokr_w2_a": c2a, "lokr_w2_b": c2b, "lokr_t2": t2}).delta(CONV, 1.0)
    w2c = t2[0, 0][None, None] * c2a[0][:, None, None, None] * c2b[0][None, :, None, None]
    assert torch.allclose(conv, torch.kron(c1[:, :, None, None], w2c), atol=1e-5)


@pytest.mark.parametrize(("kind", "parts"), [
    (LoraUpDown, {"lora_up.weight": torch.zeros(50_000, 1), "lora_down.weight": torch.zeros(1, 50_000)}),
    (Hadamard, {"hada_w1_a": torch.zeros(50_000, 1), "hada_w1_b": torch.zeros(1, 50_000),
     "hada_w2_a": torch.zeros(8, 1), "hada_w2_b": torch.zeros(1, 6)}),
    (Kronecker, {"lokr_w1": torch.zeros(300, 300), "lokr_w2_a": torch.zeros(300, 1), "lokr_w2_b": torch.zeros(1, 300)}),
], ids=["lora", "loha", "lokr"])
def test_factors_that_multiply_out_beyond_the_weight_are_refused_before_multiplying(kind, parts):
    # A 400 KB file whose product is 2.5·10⁹ values (10 GB) must not be computed to find out it does not fit.
    with pytest.raises(ValueError, match="multiply out to"):
        kind(parts).delta(W, 1.0)


def test_ia3_scales_rows_or_input_columns():
    rows, _ = IA3({"weight": rand(8), "on_input": torch.tensor(False)}).delta(W, 0.5)
    assert torch.allclose(rows, 0.5 * W * rand(8)[:, None])
    cols, _ = IA3({"weight": rand(6), "on_input": torch.tensor(True)}).delta(W, 1.0)
    assert torch.allclose(cols, W * rand(6)[None, :])


def test_full_and_norm_differences_with_their_biases():
    delta, bias = FullDiff({"diff": rand(8, 6), "diff_b": rand(8, seed=1)}).delta(W, 0.25)
    assert torch.allclose(delta, 0.25 * rand(8, 6)) and torch.allclose(bias, 0.25 * rand(8, seed=1))
    delta, bias = NormDiff({"w_norm": rand(8), "b_norm": rand(8, seed=2)}).delta(rand(8, seed=3), 2.0)
    assert torch.allclose(delta, 2 * rand(8)) and torch.allclose(bias, 2 * rand(8, seed=2))


def test_oft_rotates_blocks_of_output_rows():
    blocks = 0.1 * rand(2, 4, 4)
    delta, _ = Orthogonal({"oft_blocks": blocks, "alpha": torch.tensor(10.0)}).delta(W, 1.0)
    q = blocks - blocks.transpose(1, 2)
    eye = torch.eye(4)
    r = torch.stack([(eye + q[k]) @ torch.linalg.inv(eye - q[k]) for k in range(2)])
    assert torch.allclose(r[0] @ r[0].T, eye, atol=1e-5)  # Cayley: orthogonal
    assert torch.allclose(delta, torch.block_diag(*r).T @ W - W, atol=1e-5)
    half, _ = Orthogonal({"oft_blocks": blocks, "alpha": torch.tensor(10.0), "scale": torch.tensor(9.0)}).delta(W, 0.5)
    assert torch.allclose(half, 0.5 * delta, atol=1e-6)  # scale is always 1 for OFT
    clamped, _ = Orthogonal({"oft_blocks": blocks * 100, "alpha": torch.tensor(1e-3)}).delta(W, 1.0)
    assert clamped.abs().max() < 0.05 * W.abs().max()  # ‖Q‖ ≤ alpha·out keeps the rotation small
    stored, _ = Orthogonal({"oft_diag": r}).delta(W, 1.0)
    assert torch.allclose(stored, torch.block_diag(*r).T @ W - W, atol=1e-5)
    conv, _ = Orthogonal({"oft_diag": r}).delta(CONV, 1.0)
    expected = torch.einsum("po,oikl->pikl", torch.block_diag(*r).T, CONV) - CONV
    assert torch.allclose(conv, expected, atol=1e-5)


def test_dora_renormalises_columns_to_the_stored_magnitude():
    up, down, magnitude = rand(8, 2), rand(2, 6, seed=1), rand(1, 6, seed=2).abs() + 1
    delta, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0),
                           "dora_scale": magnitude}).delta(W, 1.0)
    merged = W + 0.5 * up @ down
    assert torch.allclose(delta, merged * magnitude / merged.norm(dim=0, keepdim=True) - W, atol=1e-5)
    assert torch.allclose((W + delta).norm(dim=0), magnitude[0], atol=1e-5)
    half, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(1.0),
                          "dora_scale": magnitude}).delta(W, 0.5)
    assert torch.allclose(half, 0.5 * delta, atol=1e-6)
    rows = rand(8, seed=3).abs() + 1  # PEFT's magnitude: one per output row
    peft, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "dora_scale": rows}).delta(W, 1.0)
    merged = W + up @ down
    assert torch.allclose(peft, merged * (rows / merged.norm(dim=1))[:, None] - W, atol=1e-5)


def test_bias_part_and_nine_channel_conv_in():
    up, down = rand(8, 2), rand(2, 6, seed=1)
    delta, _ = LoraUpDown({"lora_up.weight": up, "lora_down.weight": down, "bias": rand(8, 6, seed=5)}).delta(W, 1.0)
    assert torch.allclose(delta, up @ down + rand(8, 6, seed=5))
    conv_in = rand(32, 9, 3, 3)
    cdown, cup = rand(2, 4, 3, 3, seed=1), rand(32, 2, 1, 1, seed=2)
    padded, _ = LoraUpDown({"lora_up.weight": cup, "lora_down.weight": cdown}).delta(conv_in, 1.0)
    assert padded.shape == conv_in.shape and torch.equal(padded[:, 4:], torch.zeros(32, 5, 3, 3))
    assert torch.allclose(padded[:, :4], torch.einsum("or,rikl->oikl", cup[:, :, 0, 0], cdown), atol=1e-5)


def test_a_module_no_type_accepts_is_named():
    with pytest.raises(ModelLoadError, match="x.safetensors: lora_unet_a: no LoRA module type accepts the parts a1.weight"):
        network_module({"a1.weight": W, "b1.weight": W}, "x.safetensors: lora_unet_a")


# --- on a model ---

def _pair(out, inp, rank=2, seed=0, scale=0.2):
    return {"lora_down.weight": scale * rand(rank, inp, seed=seed), "lora_up.weight": scale * rand(out, rank, seed=seed + 1)}


def _write(path: Path, modules: dict[str, dict[str, torch.Tensor]], metadata=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{name}.{part}": t.contiguous() for name, parts in modules.items() for part, t in parts.items()},
              str(path), metadata=metadata)
    return path


def test_loras_stack_and_each_side_takes_its_multiplier(tmp_path, tiny_components):
    targets = model_targets(tiny_components)
    te_name, unet_name = "lora_te_text_model_encoder_layers_0_mlp_fc1", "lora_unet_down_blocks_0_attentions_0_proj_in"
    fc1 = tiny_components.text_encoder.get_submodule("encoder.layers.0.mlp.fc1")
    proj_in = tiny_components.unet.get_submodule("down_blocks.0.attentions.0.proj_in")
    a = load_lora(_write(tmp_path / "a.safetensors", {te_name: _pair(64, 32), unet_name: _pair(32, 32, seed=3)}))
    b = load_lora(_write(tmp_path / "b.safetensors", {unet_name: _pair(32, 32, seed=7)}))
    replaced = {}
    apply_loras([ChosenLora(a, te=0.5, unet=2.0), ChosenLora(b, te=1.0, unet=-1.0)], targets,
                lambda module, name, value: replaced.__setitem__((module, name), value))
    up_down = {n: m.parts["lora_up.weight"].reshape(m.parts["lora_up.weight"].shape[0], -1)
               @ m.parts["lora_down.weight"].reshape(m.parts["lora_down.weight"].shape[0], -1)
               for n, m in a.modules.items()}
    b_ud = b.modules[unet_name].parts["lora_up.weight"] @ b.modules[unet_name].parts["lora_down.weight"]
    assert torch.allclose(replaced[(fc1, "weight")], fc1.weight + 0.5 * up_down[te_name], atol=1e-6)
    expected = proj_in.weight + (2.0 * up_down[unet_name] - b_ud).reshape(proj_in.weight.shape)
    assert torch.allclose(replaced[(proj_in, "weight")], expected, atol=1e-6)
    replaced.clear()
    apply_loras([ChosenLora(a, te=0.0, unet=1.0)], targets, lambda m, n, v: replaced.__setitem__((m, n), v))
    assert list(replaced) == [(proj_in, "weight")]  # multiplier 0: the weight is not touched


def test_a_lora_for_another_model_is_an_error_naming_it(tmp_path, tiny_components):
    wrong = load_lora(_write(tmp_path / "xl.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in": _pair(320, 320)},
                             {"ss_base_model_version": "sdxl_base_v1-0"}))
    with pytest.raises(ModelLoadError, match=r"lora 'xl' .*1 of 1 modules do not fit.*sdxl_base_v1-0"):
        apply_loras([ChosenLora(wrong, mentioned="xl")], model_targets(tiny_components), lambda *a: None)


# --- generations on the demo model ---

@pytest.fixture(scope="module")
def demo_engine(tmp_path_factory):
    home = tmp_path_factory.mktemp("lora-home")
    folder = home / "Lora"
    engine = Engine(Workspace(home).with_folders("loras", [folder]), ONE_THREAD)
    components = engine.load(str(demo_model_path())).components
    unet, te = components.unet, components.text_encoder
    ldm = {k.removesuffix(".weight"): v.removesuffix(".weight") for k, v in
           zip(*[list(d) for d in ({k: 0 for k in unet.state_dict() if k.endswith(".weight")},
                                   unet_to_ldm({k: v for k, v in unet.state_dict().items() if k.endswith(".weight")},
                                               components.config.unet))], strict=True)}
    chosen = {path: module for path, module in unet.named_modules()
              if path.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "attn1.to_out.0", "proj_in"))
              or path == "down_blocks.0.resnets.0.conv1"}
    kohya, peft, ldm_named = {}, {}, {}
    for i, (path, module) in enumerate(sorted(chosen.items())):
        weight = module.weight
        pair = _pair(weight.shape[0], int(np.prod(weight.shape[1:])), seed=i, scale=0.6)
        if weight.ndim == 4:
            pair = {"lora_down.weight": pair["lora_down.weight"].reshape(2, *weight.shape[1:]),
                    "lora_up.weight": pair["lora_up.weight"][:, :, None, None]}
        parts = pair | {"alpha": torch.tensor(1.0)}
        kohya[f"lora_unet_{path.replace('.', '_')}"] = parts
        ldm_named[f"lora_unet_{ldm[path].replace('.', '_')}"] = parts
        peft[f"unet.{path}"] = {"lora_A.weight": parts["lora_down.weight"], "lora_B.weight": parts["lora_up.weight"],
                                "alpha": parts["alpha"]}
    for i, path in enumerate(("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc2")):
        weight = te.get_submodule(path).weight
        parts = _pair(weight.shape[0], weight.shape[1], seed=50 + i, scale=0.6)
        kohya[f"lora_te_text_model_{path.replace('.', '_')}"] = parts
        ldm_named[f"lora_te_text_model_{path.replace('.', '_')}"] = parts
        peft[f"text_encoder.text_model.{path}"] = {"lora_A.weight": parts["lora_down.weight"],
                                                   "lora_B.weight": parts["lora_up.weight"]}
    _write(folder / "style.safetensors", kohya, {"ss_output_name": "style-v1", "ss_base_model_version": "sd_v1"})
    _write(folder / "LyCORIS" / "mix.safetensors", _lycoris_modules(te))
    _write(folder / "ldm.safetensors", ldm_named)
    _write(folder / "peft" / "peft.safetensors", peft)
    return engine


def _lycoris_modules(te):
    """One module of every other type, on demo-model modules of the right shapes."""
    fc1 = te.get_submodule("encoder.layers.0.mlp.fc1").weight
    return {
        "lora_unet_down_blocks_0_resnets_0_conv2": {"hada_w1_a": 0.5 * rand(32, 2), "hada_w1_b": 0.5 * rand(2, 288, seed=1),
                                                    "hada_w2_a": 0.5 * rand(32, 2, seed=2), "hada_w2_b": 0.5 * rand(2, 288, seed=3),
                                                    "alpha": torch.tensor(2.0)},
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_v": {
            "lokr_w1": 0.5 * rand(4, 4), "lokr_w2_a": 0.5 * rand(16, 2, seed=1), "lokr_w2_b": 0.5 * rand(2, 16, seed=2)},
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": {
            "weight": rand(128).abs(), "on_input": torch.tensor(True)},
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k": {  # a Linear without a bias
            "diff": 0.3 * rand(32, 32), "diff_b": 0.3 * rand(32, seed=1)},
        "lora_unet_down_blocks_0_attentions_0_norm": {"w_norm": 0.3 * rand(32), "b_norm": 0.3 * rand(32, seed=1)},
        "lora_unet_up_blocks_2_attentions_0_proj_out": {"oft_blocks": 0.3 * rand(4, 8, 8), "alpha": torch.tensor(1.0)},
        "lora_te_text_model_encoder_layers_0_mlp_fc1": {
            "lora_up.weight": 0.5 * rand(512, 2), "lora_down.weight": 0.5 * rand(2, 128, seed=1),
            "dora_scale": fc1.detach().norm(dim=0, keepdim=True) * 1.5},
    }


def _generate(engine, prompt="1girl", **options):
    params = GenerationParams.create(prompt=prompt, negative_prompt="lowres", model=str(demo_model_path()), seed=3,
                                     steps=2, width=32, height=32)
    return engine.generate(params, save=False, **options)


def _lora_kind():
    return next(k for k in NETWORK_KINDS if k.name == "lora")


def _pixels(result):
    return np.asarray(result.images[0].image).astype(np.int16)


def _weights(engine):
    components = engine.load(str(demo_model_path())).components
    return {f"{part}.{k}": v.clone() for part in ("unet", "text_encoder")
            for k, v in getattr(components, part).state_dict().items()}


def test_weight_zero_is_no_lora_and_the_cached_model_is_restored(demo_engine):
    before = _weights(demo_engine)
    base = _pixels(_generate(demo_engine))
    zero = _generate(demo_engine, "1girl <lora:style:0>")
    assert np.array_equal(_pixels(zero), base)
    tagged = _generate(demo_engine, "1girl <lora:style:1>")
    assert not np.array_equal(_pixels(tagged), base)
    te_only = _generate(demo_engine, "1girl <lora:style:1:0>")
    assert not np.array_equal(_pixels(te_only), base) and not np.array_equal(_pixels(te_only), _pixels(tagged))
    assert np.array_equal(_pixels(_generate(demo_engine)), base)
    after = _weights(demo_engine)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kohya_ldm_and_peft_names_and_the_alias_give_the_same_image(demo_engine):
    kohya = _pixels(_generate(demo_engine, "1girl <lora:style:0.8>"))
    assert np.array_equal(_pixels(_generate(demo_engine, "1girl <lora:ldm:0.8>")), kohya)
    assert np.array_equal(_pixels(_generate(demo_engine, "1girl <lora:peft:0.8>")), kohya)
    assert np.array_equal(_pixels(_generate(demo_engine, "1girl <lyco:style-v1:0.8>")), kohya)


def test_stacked_tags_infotext_and_pasting_reapply(demo_engine):
    result = _generate(demo_engine, "1girl <lora:style:0.6> <lora:peft:0.4:te=0.2>")
    text = result.images[0].infotext
    library: LoraLibrary = demo_engine.networks.library(_lora_kind())
    folder = demo_engine.workspace.folders("loras")[0]
    expected = (f"style: {library.shorthash(folder / 'style.safetensors')}, "
                f"peft: {library.shorthash(folder / 'peft' / 'peft.safetensors')}")
    assert parse_infotext(text)["Lora hashes"] == expected
    assert f'Lora hashes: "{expected}"' in text
    pasted = decode_infotext(text)
    assert pasted.prompt == "1girl <lora:style:0.6> <lora:peft:0.4:te=0.2>"
    again = demo_engine.generate(pasted.updated(model=str(demo_model_path())), save=False)
    assert np.array_equal(_pixels(again), _pixels(result))
    assert "Lora hashes" not in _generate(demo_engine).images[0].infotext


def test_every_module_type_applies_to_the_demo_model_and_is_undone(demo_engine):
    before = _weights(demo_engine)
    base = _pixels(_generate(demo_engine))
    assert np.array_equal(_pixels(_generate(demo_engine, "1girl <lyco:mix:0>")), base)
    mixed = _generate(demo_engine, "1girl <lyco:mix:1>")
    assert not np.array_equal(_pixels(mixed), base)
    components = demo_engine.load(str(demo_model_path())).components
    assert components.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k").bias is None
    mix = load_lora(demo_engine.workspace.folders("loras")[0] / "LyCORIS" / "mix.safetensors")
    replaced = []
    applied = apply_loras([ChosenLora(mix)], model_targets(components), lambda m, n, v: replaced.append(n))
    assert applied.unmatched == {} and sorted(replaced) == ["bias"] * 2 + ["weight"] * 7
    after = _weights(demo_engine)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_missing_lora_is_named(demo_engine):
    with pytest.raises(ParamsError, match=r"lora 'nothing': no such file in .*Lora \(prompt tag <lora:nothing:1>\)"):
        _generate(demo_engine, "1girl <lora:nothing:1>")


def test_an_interrupted_run_restores_the_weights(demo_engine):
    before = _weights(demo_engine)
    cancel = Cancel()
    with pytest.raises(Interrupted):
        _generate(demo_engine, "1girl <lora:style:1>", cancel=cancel, progress=lambda event: cancel.interrupt.set())
    after = _weights(demo_engine)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_listing_rows_through_the_engine(demo_engine):
    kind = _lora_kind()
    rows = {row["name"]: row for row in demo_engine.networks.rows(kind, 128)}
    assert set(rows) == {"style", "ldm", "peft", "mix"} and all(r["status"] == "loaded" for r in rows.values())
    assert rows["mix"]["kind"] == "lora+loha+lokr+ia3+full+oft+norm+dora"
    assert rows["style"]["alias"] == "style-v1" and rows["style"]["kind"] == "locon" and rows["style"]["rank"] == 2
    assert kind.summary(rows["style"]).startswith("locon, rank 2; sd_v1; alias style-v1")


@pytest.mark.parametrize("module", [
    FullDiff({"diff": rand(8, 6), "diff_b": rand(8, seed=1)}),
    NormDiff({"w_norm": rand(8, 6, seed=4), "b_norm": rand(8, seed=2)}),
    LoraUpDown({"lora_up.weight": rand(8, 2), "lora_down.weight": rand(2, 6), "alpha": torch.tensor(1.0)}),
], ids=["full", "norm", "lora"])
def test_a_delta_is_a_new_tensor_and_leaves_the_file_s_tensors_alone(module):
    """The patch sums deltas and adds W in place (`apply_loras`): a delta must never be a stored
    tensor, nor scale one in place, or a second run would see the file changed."""
    stored = {name: t.clone() for name, t in module.parts.items()}
    first, _ = module.delta(W, 0.5)
    before = first.clone()
    first.add_(1.0)  # as `apply_loras` does with it
    second, _ = module.delta(W, 0.5)
    assert all(torch.equal(module.parts[name], t) for name, t in stored.items())
    assert torch.equal(before, second)
    assert all(first.data_ptr() != t.data_ptr() for t in module.parts.values())

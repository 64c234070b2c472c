"""Hypernetworks applied through a diffusers attention processor (specs §1.4)."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from emaki.networks import Hypernetwork, apply_hypernetworks
from emaki.networks.hypernet_attention import attention_layers


def strong(hn: Hypernetwork, seed: int) -> Hypernetwork:
    """Weights large enough that the hypernetwork visibly changes K/V."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in hn.modules():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return hn


def make_hn(name: str, sizes, seed: int, **options) -> Hypernetwork:
    return strong(Hypernetwork.create(name, sizes, **options), seed)


@pytest.fixture(scope="module")
def sd_hn() -> Hypernetwork:
    """A hypernetwork with the four SD 1.x widths (built once: it has 25M parameters)."""
    return make_hn("sd", (768, 320, 640, 1280), seed=5)


def unet_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([500, 500]), context


class KVRecorder:
    """Forward pre-hooks on every `to_q`/`to_k`/`to_v`: what each projection received."""

    def __init__(self, unet):
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, attn in attention_layers(unet).items():
            base = name.removesuffix(".processor")
            for proj in ("to_q", "to_k", "to_v"):
                self.handles.append(getattr(attn, proj).register_forward_pre_hook(
                    lambda m, args, key=f"{base}.{proj}": self.inputs.__setitem__(key, args[0].detach().clone())))

    def close(self):
        for h in self.handles:
            h.remove()


def run(unet, inputs, hypernetworks=()):
    recorder = KVRecorder(unet)
    applied = apply_hypernetworks(unet, list(hypernetworks))
    try:
        with torch.no_grad():
            out = unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample
    finally:
        applied.remove()
        recorder.close()
    return out, recorder.inputs


def test_kv_inputs_equal_the_modules_applied_to_the_context(tiny_components):
    unet = tiny_components.unet
    inputs = unet_inputs(unet)
    hn = make_hn("hn", (32, 64), seed=1, activation_func="relu", add_layer_norm=True)
    base_out, _ = run(unet, inputs)
    out, seen = run(unet, inputs, [(hn, 0.8)])
    assert not torch.allclose(out, base_out)
    cross = [k.removesuffix(".to_k") for k in seen if ".attn2.to_k" in k]
    self_attn = [k.removesuffix(".to_k") for k in seen if ".attn1.to_k" in k]
    assert cross and self_attn
    module_k, module_v = hn.layers[32]
    for layer in cross:  # cross-attention: the text context through the 32-wide (= text width) pair
        torch.testing.assert_close(seen[f"{layer}.to_k"], module_k.apply_with_strength(inputs[2], 0.8))
        torch.testing.assert_close(seen[f"{layer}.to_v"], module_v.apply_with_strength(inputs[2], 0.8))
    for layer in self_attn:  # self-attention: the hidden states through the pair of their width
        hidden = seen[f"{layer}.to_q"]  # q is not modified: it sees the hidden states as they are
        k_mod, v_mod = hn.layers[hidden.shape[-1]]
        torch.testing.assert_close(seen[f"{layer}.to_k"], k_mod.apply_with_strength(hidden, 0.8))
        torch.testing.assert_close(seen[f"{layer}.to_v"], v_mod.apply_with_strength(hidden, 0.8))


def test_several_hypernetworks_chain_in_order(tiny_components):
    unet = tiny_components.unet
    inputs = unet_inputs(unet, seed=1)
    first, second = make_hn("a", (32,), seed=2), make_hn("b", (32,), seed=3, activation_func="tanh")
    _, seen = run(unet, inputs, [(first, 1.0), (second, 0.5)])
    layer = next(k for k in seen if ".attn2.to_k" in k).removesuffix(".to_k")
    expected_k = second.layers[32][0].apply_with_strength(first.layers[32][0].apply_with_strength(inputs[2], 1.0), 0.5)
    expected_v = second.layers[32][1].apply_with_strength(first.layers[32][1].apply_with_strength(inputs[2], 1.0), 0.5)
    torch.testing.assert_close(seen[f"{layer}.to_k"], expected_k)
    torch.testing.assert_close(seen[f"{layer}.to_v"], expected_v)


def test_processor_equals_diffusers_attention_when_strength_is_zero(tiny_components):
    unet = tiny_components.unet
    inputs = unet_inputs(unet, seed=2)
    base, _ = run(unet, inputs)
    zero, _ = run(unet, inputs, [(make_hn("z", (32, 64), seed=4), 0.0)])
    torch.testing.assert_close(zero, base, rtol=1e-5, atol=1e-5)


def test_sizes_the_model_lacks_are_ignored_and_removal_restores(tiny_components, sd_hn):
    unet = tiny_components.unet
    inputs = unet_inputs(unet, seed=3)
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    base, _ = run(unet, inputs)
    applied = apply_hypernetworks(unet, [(sd_hn, 1.0)])
    assert applied.processors == {}  # no 768/320/640/1280 attention in the tiny model
    applied.remove()
    partial = make_hn("p", (64,), seed=6)
    with apply_hypernetworks(unet, [(partial, 1.0)]) as applied:
        assert applied.processors and all(".attn1." in name for name in applied.processors)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    again, _ = run(unet, inputs)
    assert torch.equal(again, base)


@pytest.mark.parametrize("query_dim, cross_dim, size", [(320, 768, 768), (320, None, 320), (640, None, 640),
                                                        (1280, None, 1280), (1280, 768, 768)])
def test_real_sd_widths_select_the_right_pair(sd_hn, query_dim, cross_dim, size):
    """SD 1.x attention layers: attn2 (context 768) takes the 768 pair; attn1 its block width."""
    torch.manual_seed(0)
    attn = Attention(query_dim, cross_attention_dim=cross_dim, heads=8, dim_head=query_dim // 8).eval()
    attn.set_processor(AttnProcessor2_0())
    hn = sd_hn
    x = torch.randn(1, 16, query_dim)
    context = torch.randn(1, 77, 768) if cross_dim else None
    seen = {}
    hooks = [attn.to_k.register_forward_pre_hook(lambda m, a: seen.__setitem__("k", a[0])),
             attn.to_v.register_forward_pre_hook(lambda m, a: seen.__setitem__("v", a[0]))]
    holder = torch.nn.Module()
    holder.attn = attn
    holder.dummy = torch.nn.Linear(1, 1)
    with apply_hypernetworks(holder, [(hn, 0.6)]), torch.no_grad():
        attn(x, encoder_hidden_states=context)
    for h in hooks:
        h.remove()
    source = context if cross_dim else x
    torch.testing.assert_close(seen["k"], hn.layers[size][0].apply_with_strength(source, 0.6))
    torch.testing.assert_close(seen["v"], hn.layers[size][1].apply_with_strength(source, 0.6))
    assert isinstance(attn.processor, AttnProcessor2_0)

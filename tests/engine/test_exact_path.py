"""Prepacked convolution weights (`emaki.engine.prepack`, measured by benchmarks/exact_path.py and
not yet the engine's default: docs/performance.md): the same numbers as the plain bf16
convolution, bit for bit, also after the weights change."""

from __future__ import annotations

import copy

import pytest
import torch

from emaki.engine.prepack import is_prepacked, packable_convs, set_prepacked


@pytest.fixture()
def bf16_unet(tiny_components: object) -> torch.nn.Module:
    unet = copy.deepcopy(tiny_components.unet).to(torch.bfloat16)  # type: ignore[attr-defined]
    return unet.to(memory_format=torch.channels_last)


def _inputs(unet: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g).to(torch.bfloat16)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last), torch.tensor([500.0, 20.0]), context


def _run(unet: torch.nn.Module, prepacked: bool) -> torch.Tensor:
    set_prepacked(unet, prepacked)
    x, t, context = _inputs(unet)
    with torch.inference_mode():
        return unet(x, t, encoder_hidden_states=context).sample


def test_prepacked_weights_give_the_plain_convolutions_output_bit_for_bit(bf16_unet):
    plain = _run(bf16_unet, False)
    packed = _run(bf16_unet, True)
    assert is_prepacked(bf16_unet) and packable_convs(bf16_unet)
    assert torch.equal(packed, plain)
    assert torch.equal(_run(bf16_unet, True), plain)  # the second call, from the packed cache
    set_prepacked(bf16_unet, False)
    assert not is_prepacked(bf16_unet)


def test_a_weight_changed_in_place_is_packed_again(bf16_unet):
    _run(bf16_unet, True)
    with torch.no_grad():
        for conv in packable_convs(bf16_unet):
            conv.weight.mul_(0.5)  # as a LoRA merged into the weights
    assert torch.equal(_run(bf16_unet, True), _run(bf16_unet, False))


def test_with_autograd_on_the_plain_convolution_runs(bf16_unet):
    set_prepacked(bf16_unet, True)
    x, t, context = _inputs(bf16_unet)
    out = bf16_unet(x.requires_grad_(), t, encoder_hidden_states=context).sample
    out.float().sum().backward()  # the packed op has no backward: training runs the plain one
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_weight_swapped_for_a_run_is_packed_and_unpacked(bf16_unet):
    plain = _run(bf16_unet, False)
    conv = packable_convs(bf16_unet)[0]
    original = conv.weight
    conv.weight = torch.nn.Parameter(original * 0.5, requires_grad=False)  # a LoRA run's weight
    assert not torch.equal(_run(bf16_unet, True), plain)
    conv.weight = original  # the run ended
    assert torch.equal(_run(bf16_unet, True), plain)

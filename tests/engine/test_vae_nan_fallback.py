"""A low-precision VAE decode that makes NaN is done again in fp32 (A1111's --no-half-vae), with
a warning; the VAE's weights are put back as they were."""

from __future__ import annotations

import copy
import logging
import os

import pytest
import torch

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.engine.vae import decode_latents
from emaki.params import GenerationParams
from emaki.workspace import workspace_from_environment

BF16 = DevicePolicy.choose("bf16", "cpu", threads=1, vae_tiling="off")


@pytest.fixture
def bf16_vae(tiny_components):
    return copy.deepcopy(tiny_components.vae).to(torch.bfloat16)


def overflow_below_fp32(vae) -> None:
    """Stand-in for weights that overflow in half precision (the NAI VAE in fp16): the last
    convolution gives NaN unless it runs in fp32."""

    def overflow(module, args, out):
        return out if out.dtype == torch.float32 else torch.full_like(out, float("nan"))

    vae.decoder.conv_out.register_forward_hook(overflow)


def test_nan_in_bf16_decodes_again_in_fp32(bf16_vae, caplog):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    weights = {k: v.clone() for k, v in bf16_vae.state_dict().items()}
    with torch.inference_mode():
        in_fp32 = copy.deepcopy(bf16_vae).float().decode(latents / 0.18215).sample
    overflow_below_fp32(bf16_vae)
    with caplog.at_level(logging.WARNING, logger="emaki.engine.vae"):
        pixels = decode_latents(bf16_vae, latents, BF16)
    assert torch.isfinite(pixels).all()
    assert torch.allclose(pixels, in_fp32, atol=1e-5)
    assert "NaN or infinite values in bfloat16; decoding again in fp32" in caplog.text
    assert bf16_vae.dtype == torch.bfloat16
    assert all(torch.equal(v, weights[k]) for k, v in bf16_vae.state_dict().items())


def test_finite_decode_is_not_repeated(bf16_vae, caplog):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="emaki.engine.vae"):
        pixels = decode_latents(bf16_vae, latents, BF16)
    with torch.inference_mode():
        expected = bf16_vae.decode((latents / 0.18215).to(torch.bfloat16)).sample.float()
    assert torch.equal(pixels, expected) and caplog.text == ""


def test_a_bf16_generation_with_an_overflowing_vae_still_makes_a_picture(tiny_safetensors, caplog):
    """Through the engine (its own: the hook stays on its cached VAE)."""
    engine = Engine(workspace_from_environment(os.environ), BF16)
    params = GenerationParams.create(prompt="1girl", model=str(tiny_safetensors), seed=1, steps=1, width=32,
                                     height=32)
    overflow_below_fp32(engine.load(str(tiny_safetensors), None).components.vae)
    with caplog.at_level(logging.WARNING, logger="emaki.engine.vae"):
        image = engine.generate(params, save=False).images[0].image
    assert "decoding again in fp32" in caplog.text
    assert len(set(image.getdata())) > 1  # NaN would have become one flat colour

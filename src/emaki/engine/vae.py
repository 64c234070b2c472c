"""The VAE's two passes as a run makes them: whole, or in tiles when the `DevicePolicy` says
(`vae_tiling`), and a low-precision decode that makes NaN or infinities done again in fp32.

A VAE in fp16 (or bf16) can overflow where its fp32 weights do not (the NAI VAE is the known
case; A1111's `--no-half-vae` and its "convert VAE into 32-bit float and retry"): the decode
is repeated with the VAE in fp32, once, and the weights put back as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from emaki.devices import DevicePolicy
from emaki.engine.vae_tiling import decode_tiled, encode_tiled

log = logging.getLogger(__name__)


def latent_scale(vae: Any) -> float:
    """The factor between the VAE's latents and the scaled latents the UNet works on (0.18215
    for SD 1.x, when a config does not say)."""
    return float(vae.config.get("scaling_factor", 0.18215))


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent pixel along a side (8 for SD 1.x)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def pads_circularly(module: torch.nn.Module) -> bool:
    """Seamless tiling (`emaki.engine.tiling`) made the convolutions wrap around the picture's
    edges: a tile's edges are not the picture's, so such a VAE runs whole."""
    return any(getattr(conv, "padding_mode", "zeros") == "circular" for conv in module.modules()
               if isinstance(conv, torch.nn.Conv2d))


def in_layout(x: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """`x` in the memory layout the policy runs convolutions in. A channels-last VAE fed a
    contiguous tensor runs its convolutions in the slow layout: measured on the SD 1.5 VAE, bf16,
    512², 2 threads: 7.1-8.0 s per decode against 2.7 s channels-last."""
    return x.contiguous(memory_format=torch.channels_last) if policy.channels_last else x


@torch.inference_mode()
def decode_latents(vae: Any, latents: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """Pixels in [-1, 1] (float32, n×3×H×W, on the VAE's device) of scaled latents; in fp32
    again when a lower precision made NaN or infinities (module docstring)."""
    z = latents / latent_scale(vae)
    pixels = _decode(vae, z, policy)
    if vae.dtype != torch.float32 and not bool(torch.isfinite(pixels).all()):
        log.warning("the VAE made NaN or infinite values in %s; decoding again in fp32 (as A1111's "
                    "--no-half-vae)", str(vae.dtype).removeprefix("torch."))
        with in_float32(vae):
            pixels = _decode(vae, z, policy)
    return pixels


def _decode(vae: Any, z: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    z = in_layout(z.to(device=vae.device, dtype=vae.dtype), policy)
    pixels = z.shape[0] * z.shape[-2] * z.shape[-1] * vae_scale_factor(vae) ** 2
    if policy.tiles_vae(pixels) and not pads_circularly(vae.decoder):
        return torch.cat([decode_tiled(vae, z[i:i + 1]) for i in range(z.shape[0])])  # one image at a time
    return vae.decode(z).sample.float()


@torch.inference_mode()
def encode_to_latents(vae: Any, pixels: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """Scaled latents (n×C×h×w, float32) of VAE-input pixels in [-1, 1]: the posterior's mean, so
    the same image always gives the same latents (A1111 samples it with the global RNG)."""
    x = in_layout(pixels.to(device=policy.device, dtype=vae.dtype), policy)
    factor = vae_scale_factor(vae)
    fits = x.shape[-2] % factor == 0 and x.shape[-1] % factor == 0
    if fits and policy.tiles_vae(x.shape[0] * x.shape[-2] * x.shape[-1]) and not pads_circularly(vae.encoder):
        moments = torch.cat([encode_tiled(vae, x[i:i + 1]) for i in range(x.shape[0])])
    else:
        moments = vae.encode(x).latent_dist.parameters
    mean = moments.chunk(2, dim=1)[0]
    return mean.float() * latent_scale(vae)


@contextmanager
def in_float32(module: torch.nn.Module) -> Iterator[None]:
    """`module` in fp32 inside the block; its weights back in their dtype after (a bf16 or fp16
    value survives the round trip through fp32 exactly)."""
    dtype = next(module.parameters()).dtype
    module.to(torch.float32)
    try:
        yield
    finally:
        module.to(dtype)

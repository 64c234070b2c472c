"""Noise samplers for the samplers' `noise_sampler` argument.

`ImageRNG.noise_sampler()` is A1111's default (every draw is the next tensor of each image's
stream). For DPM++ SDE, 2M SDE and 3M SDE A1111 instead uses a Brownian tree per image, seeded
with the image seed (Kidger et al. 2021, "Efficient and Accurate Gradients for Neural SDEs",
Brownian Interval; via `torchsde`), so the noise between two sigmas does not depend on the step
count. `brownian_noise_sampler` builds that one; it needs the optional `torchsde` package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from emaki.errors import SamplerError

Tensor = torch.Tensor


class BrownianNoiseSampler:
    """noise(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|), one
    Brownian tree per image over [min nonzero sigma, max sigma] (k-diffusion's
    `BrownianTreeNoiseSampler` with one seed per image, as A1111 creates it)."""

    def __init__(self, x: Tensor, sigmas: Tensor, seeds: Sequence[int]) -> None:
        try:
            import torchsde
        except ImportError:
            raise SamplerError(
                "Brownian-tree noise (A1111's DPM++ SDE noise) needs the optional package torchsde"
            ) from None
        if len(seeds) != x.shape[0]:
            raise SamplerError(
                f"one seed per image: {len(seeds)} seeds for a batch of {x.shape[0]}"
            )
        t0 = torch.as_tensor(sigmas[sigmas > 0].min())
        t1 = torch.as_tensor(sigmas.max())
        w0 = torch.zeros_like(x)[0]
        self.trees: list[Any] = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s)) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (b - a).abs().sqrt()


def brownian_noise_sampler(x: Tensor, sigmas: Tensor, seeds: Sequence[int]) -> BrownianNoiseSampler:
    """A1111's noise for samplers with `brownian_noise` (`KDiffusionSampler.create_noise_sampler`)."""
    return BrownianNoiseSampler(x, sigmas, seeds)

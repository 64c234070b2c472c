"""Shared pieces of the k-diffusion style samplers: types, the Karras ODE derivative, noise.

A *denoiser* is `denoiser(x, sigma) -> x0` with `sigma` of shape (batch,) (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", §2: D(x; sigma)).
A *noise sampler* is `noise_sampler(sigma, sigma_next) -> Tensor` shaped like x; it supplies every
random draw a sampler makes, so the caller (the engine, through `ImageRNG`) owns all randomness.
Samplers call it exactly where k-diffusion draws noise, except where the draw would be multiplied
by zero (eta = 0, churn off): there they skip it and need no noise sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from emaki.errors import SamplerError
from emaki.sampling.progress import StepCallback, StepInfo

Tensor = torch.Tensor
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


class Denoiser(Protocol):
    """`denoiser(x, sigma) -> x0`; `model_sigmas` (ascending discrete sigmas) where a sampler needs it."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Karras ODE derivative dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, eq. 1)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step into a deterministic part to sigma_down and fresh noise of size sigma_up.

    sigma_up = min(sigma_to, eta * sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)),
    sigma_down = sqrt(sigma_to^2 - sigma_up^2) (ancestral sampling, Ho et al. 2020, in sigma form).
    """
    if not eta:
        return sigma_to, sigma_to * 0
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def require_noise(noise_sampler: NoiseSampler | None, sampler: str) -> NoiseSampler:
    """The noise sampler, or a `SamplerError`: samplers never fall back to the global RNG."""
    if noise_sampler is None:
        raise SamplerError(
            f"sampler {sampler!r} draws noise: pass noise_sampler=(sigma, sigma_next) -> Tensor"
        )
    return noise_sampler


def batch_sigma(x: Tensor, sigma: Tensor) -> Tensor:
    """`sigma * x.new_ones(batch)`, the (batch,) sigma that k-diffusion hands the denoiser."""
    return sigma * x.new_ones([x.shape[0]])


def report(
    callback: StepCallback | None, step: int, total: int, sigma: Tensor, x: Tensor, denoised: Tensor
) -> None:
    """Call `callback` with the state after `step`; `sigma` is the level `denoised` was predicted at."""
    if callback is not None:
        callback(StepInfo(step=step, total=total, sigma=float(sigma), x=x, denoised=denoised))

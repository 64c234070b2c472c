"""Euler, Euler ancestral and Heun samplers (Karras et al. 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", Algorithm 2), as k-diffusion implements them."""

from __future__ import annotations

import torch

from emaki.sampling.common import (
    Denoiser,
    NoiseSampler,
    ancestral_step,
    batch_sigma,
    report,
    require_noise,
    to_d,
)
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor


def churn(
    x: Tensor,
    sigmas: Tensor,
    i: int,
    noise_sampler: NoiseSampler | None,
    name: str,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> tuple[Tensor, Tensor]:
    """Karras Algorithm 2 lines 4-6: raise sigma_i to sigma_hat = sigma_i (1 + gamma) by adding noise.

    gamma = min(s_churn / N, sqrt(2) - 1) inside [s_tmin, s_tmax]. As in k-diffusion, a draw is made
    at every step (even where gamma = 0) once churn is on, so the noise stream lines up with A1111's.
    """
    if s_churn <= 0:
        return x, sigmas[i]
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    eps = require_noise(noise_sampler, name)(sigmas[i], sigmas[i + 1]) * s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps x += (sigma_next - sigma_hat) * d (Karras et al. 2022, Algorithm 2, first-order)."""
    total = len(sigmas) - 1
    for i in range(total):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, "Euler", s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, batch_sigma(x, sigma_hat))
        d = to_d(x, sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler step to sigma_down, then fresh noise of size sigma_up (ancestral sampling; k-diffusion `sample_euler_ancestral`)."""
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and eta:
            noise = require_noise(noise_sampler, "Euler a")(sigmas[i], sigmas[i + 1])
            x = x + noise * s_noise * sigma_up
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order steps, Euler on the last step (Karras et al. 2022, Algorithm 2)."""
    total = len(sigmas) - 1
    for i in range(total):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, "Heun", s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, batch_sigma(x, sigma_hat))
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = denoiser(x_2, batch_sigma(x_2, sigmas[i + 1]))
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
        report(callback, i, total, sigmas[i], x, denoised)
    return x

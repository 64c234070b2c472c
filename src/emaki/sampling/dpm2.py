"""DPM2 and DPM2 ancestral: Karras et al. 2022 Algorithm 2 with the DPM-Solver-2 midpoint step
(Lu et al. 2022, "DPM-Solver", Algorithm 1 with r = 1/2, midpoint in log sigma), as k-diffusion."""

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
from emaki.sampling.euler import churn
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor


def _midpoint(denoiser: Denoiser, x: Tensor, d: Tensor, sigma: Tensor, sigma_to: Tensor) -> Tensor:
    """x + d_mid (sigma_to - sigma), d_mid taken at sigma_mid = exp(mean(log sigma, log sigma_to))."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    denoised_2 = denoiser(x_2, batch_sigma(x_2, sigma_mid))
    return x + to_d(x_2, sigma_mid, denoised_2) * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(
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
    """DPM-Solver-2 steps (log-sigma midpoint), Euler to sigma = 0 (k-diffusion `sample_dpm_2`)."""
    total = len(sigmas) - 1
    for i in range(total):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, "DPM2", s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, batch_sigma(x, sigma_hat))
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _midpoint(denoiser, x, d, sigma_hat, sigmas[i + 1])
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 step to sigma_down, then noise of size sigma_up (k-diffusion `sample_dpm_2_ancestral`).

    As k-diffusion: no noise is added on the step whose sigma_down is 0.
    """
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _midpoint(denoiser, x, d, sigmas[i], sigma_down)
            if eta:
                noise = require_noise(noise_sampler, "DPM2 a")(sigmas[i], sigmas[i + 1])
                x = x + noise * s_noise * sigma_up
        report(callback, i, total, sigmas[i], x, denoised)
    return x

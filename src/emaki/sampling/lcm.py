"""LCM sampling (Luo et al. 2023, "Latent Consistency Models", Algorithm 1, multistep consistency
sampling) as A1111 v1.10.1 runs it (`sd_samplers_lcm.py`).

The sampler is simple: x = D(x; sigma_i), then re-noise to sigma_{i+1}. What makes it LCM is the
denoiser: A1111 wraps the model so that it only sees LCM's 50 "original" timesteps
(19, 39, ..., 999), quantizes every sigma to the nearest of them, and applies the consistency
boundary condition c_skip x + c_out x0 with sigma_data = 0.5 and timestep scaling 10. The helpers
below give the engine's denoiser those pieces.
"""

from __future__ import annotations

import torch

from emaki.sampling.common import Denoiser, NoiseSampler, batch_sigma, report, require_noise
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor

LCM_ORIGINAL_STEPS = 50
"""LCM's original (distillation) timestep count; A1111's default."""


def lcm_model_sigmas(model_sigmas: Tensor, original_steps: int = LCM_ORIGINAL_STEPS) -> Tensor:
    """The sigmas of LCM's valid timesteps skip - 1, 2 skip - 1, ..., N - 1 (skip = N // 50), ascending.

    `sigmas_for` uses these as the model's schedule for the LCM sampler, as A1111's
    `LCMCompVisDenoiser` does.
    """
    skip = len(model_sigmas) // original_steps
    return model_sigmas[skip - 1 :: skip][:original_steps]


def lcm_timestep(
    sigma: Tensor, model_sigmas: Tensor, original_steps: int = LCM_ORIGINAL_STEPS
) -> Tensor:
    """The LCM timestep the UNet is called at: nearest valid timestep in log sigma
    (A1111 `LCMCompVisDenoiser.sigma_to_t`)."""
    skip = len(model_sigmas) // original_steps
    valid = lcm_model_sigmas(model_sigmas, original_steps).log().to(sigma.device)
    idx = (sigma.log().reshape(-1)[None, :] - valid[:, None]).abs().argmin(dim=0)
    return (idx * skip + (skip - 1)).view(sigma.shape)


def lcm_boundary(
    x: Tensor,
    denoised: Tensor,
    sigma: Tensor,
    model_sigmas: Tensor,
    *,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
) -> Tensor:
    """Consistency-model output c_skip(t) x + c_out(t) x0 with s = 10 t: c_skip = sd^2 / (s^2 + sd^2),
    c_out = s / sqrt(s^2 + sd^2) (Song et al. 2023, "Consistency Models", eq. 7; A1111 applies it to
    the sigma-scaled input x)."""
    s = lcm_timestep(sigma, model_sigmas).to(x.dtype) * timestep_scaling
    s = s.view(-1, *([1] * (x.ndim - 1)))
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s / (s**2 + sigma_data**2) ** 0.5
    return c_out * denoised + c_skip * x


@torch.no_grad()
def sample_lcm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """x <- D(x; sigma_i); then x += sigma_{i+1} z while sigma_{i+1} > 0 (Luo et al. 2023, Alg. 1)."""
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * require_noise(noise_sampler, "LCM")(sigmas[i], sigmas[i + 1])
        report(callback, i, total, sigmas[i], x, denoised)
    return x

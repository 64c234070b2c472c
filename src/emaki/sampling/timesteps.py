"""DDIM and PLMS on the model's discrete timesteps, as A1111 v1.10.1 runs them
(`sd_samplers_timesteps_impl.py`): Song et al. 2021, "Denoising Diffusion Implicit Models",
eq. 12; Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds" (PLMS).

Unlike the k-diffusion samplers these work in the model's own (variance-preserving) scaling,
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps: they take the initial noise unscaled and return the
latent at the last timestep in that scaling, as A1111 does (`Sampler.initial_latent` does the
scaling). `sigmas` are the model sigmas of the timesteps (`sigmas_for`), descending; A1111 runs
len(sigmas) - 1 steps and stops at timestep 1.
"""

from __future__ import annotations

import torch

from emaki.errors import SamplerError
from emaki.sampling.common import Denoiser, NoiseSampler, batch_sigma, report, require_noise
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor


def eps_vp(denoiser: Denoiser, x_vp: Tensor, sigma: Tensor) -> Tensor:
    """Noise prediction eps(x_t, t) through a sigma-space denoiser: x = x_t sqrt(1 + sigma^2),
    eps = (x - D(x; sigma)) / sigma (the denoiser scales x back by 1/sqrt(1 + sigma^2))."""
    x_in = x_vp * (1 + sigma**2) ** 0.5
    return (x_in - denoiser(x_in, batch_sigma(x_in, sigma))) / sigma


def check_timestep_sigmas(sigmas: Tensor) -> None:
    if len(sigmas) < 2 or bool((sigmas <= 0).any()):
        raise SamplerError("timestep samplers need at least two positive sigmas (use sigmas_for)")


def _alpha(sigma: Tensor) -> Tensor:
    """abar = 1 / (1 + sigma^2), in float64 on the CPU (MPS has no float64)."""
    return 1.0 / (1.0 + sigma.detach().cpu().double() ** 2)


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM: x_prev = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - s^2) eps + s z, with
    s = eta sqrt((1 - a_prev)/(1 - a) (1 - a/a_prev)) (Song et al. 2021, eq. 12 and 16)."""
    check_timestep_sigmas(sigmas)
    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        a_t, a_prev = _alpha(sigma), _alpha(sigma_prev)
        s = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        e_t = eps_vp(denoiser, x, sigma)
        pred_x0 = (x - float((1 - a_t).sqrt()) * e_t) / float(a_t.sqrt())
        x = float(a_prev.sqrt()) * pred_x0 + float((1.0 - a_prev - s**2).sqrt()) * e_t
        if eta:
            x = x + float(s) * require_noise(noise_sampler, "DDIM")(sigma, sigma_prev)
        report(callback, i, total, sigma, x, pred_x0)
    return x


@torch.no_grad()
def sample_plms(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """PLMS: DDIM transfer with eps from a pseudo improved-Euler first step, then Adams–Bashforth
    of order 2, 3, 4 on the eps history (Liu et al. 2022, eq. 11-12; LDM's `PLMSSampler`)."""
    check_timestep_sigmas(sigmas)
    total = len(sigmas) - 1
    old_eps: list[Tensor] = []

    def transfer(x: Tensor, e_t: Tensor, a_t: Tensor, a_prev: Tensor) -> tuple[Tensor, Tensor]:
        pred_x0 = (x - float((1 - a_t).sqrt()) * e_t) / float(a_t.sqrt())
        return float(a_prev.sqrt()) * pred_x0 + float((1.0 - a_prev).sqrt()) * e_t, pred_x0

    for i in range(total):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        a_t, a_prev = _alpha(sigma), _alpha(sigma_prev)
        e_t = eps_vp(denoiser, x, sigma)
        if not old_eps:
            x_prev, _ = transfer(x, e_t, a_t, a_prev)
            e_t_prime = (e_t + eps_vp(denoiser, x_prev, sigma_prev)) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = transfer(x, e_t_prime, a_t, a_prev)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        report(callback, i, total, sigma, x, pred_x0)
    return x

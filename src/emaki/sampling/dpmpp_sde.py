"""Stochastic and ancestral DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++", §4 and
Appendix; the SDE variants follow k-diffusion's derivation of DPM-Solver++ for the variance-
exploding SDE with noise share eta), in log-sigma time t = -log sigma, h = t_next - t."""

from __future__ import annotations

import torch

from emaki.errors import SamplerError
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


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) (single-step, r = 1/2) to sigma_down, then noise sigma_up (ancestral).

    Euler when sigma_down = 0 (k-diffusion `sample_dpmpp_2s_ancestral`).
    """
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            s = t + h / 2
            x_2 = ((-s).exp() / (-t).exp()) * x - torch.expm1(-h / 2) * denoised
            denoised_2 = denoiser(x_2, batch_sigma(x_2, (-s).exp()))
            x = ((-t_next).exp() / (-t).exp()) * x - torch.expm1(-h) * denoised_2
        if sigmas[i + 1] > 0 and eta:
            noise = require_noise(noise_sampler, "DPM++ 2S a")(sigmas[i], sigmas[i + 1])
            x = x + noise * s_noise * sigma_up
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> Tensor:
    """DPM-Solver++ stochastic single-step (2 evaluations): an ancestral first-order step to
    t + r h, then an ancestral step to t_next with D = (1 - 1/2r) D_0 + (1/2r) D_r.

    Two noise draws per step, at (sigma, sigma_s) and (sigma, sigma_next) — A1111 feeds a Brownian
    tree here (k-diffusion `sample_dpmpp_sde`).
    """
    total = len(sigmas) - 1
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            ns = require_noise(noise_sampler, "DPM++ SDE") if eta else None
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)
            sigma_t, sigma_s, sigma_next = (-t).exp(), (-s).exp(), (-t_next).exp()

            sd, su = ancestral_step(sigma_t, sigma_s, eta)
            s_ = -sd.log()
            x_2 = ((-s_).exp() / sigma_t) * x - torch.expm1(t - s_) * denoised
            if ns is not None:
                x_2 = x_2 + ns(sigma_t, sigma_s) * s_noise * su
            denoised_2 = denoiser(x_2, batch_sigma(x_2, sigma_s))

            sd, su = ancestral_step(sigma_t, sigma_next, eta)
            t_next_ = -sd.log()
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = ((-t_next_).exp() / sigma_t) * x - torch.expm1(t - t_next_) * denoised_d
            if ns is not None:
                x = x + ns(sigma_t, sigma_next) * s_noise * su
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE: x = (sigma_next/sigma) e^{-eta h} x + (1 - e^{-h - eta h}) D_i
    + second-order correction (midpoint or Heun) + sigma_next sqrt(1 - e^{-2 eta h}) noise
    (Lu et al. 2022 "DPM-Solver++" 2M, SDE form; k-diffusion `sample_dpmpp_2m_sde`)."""
    if solver_type not in ("heun", "midpoint"):
        raise SamplerError(f"DPM++ 2M SDE solver_type {solver_type!r}; expected 'heun' or 'midpoint'")
    total = len(sigmas) - 1
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    h: Tensor | None = None
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = (
                sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x
                + (-torch.expm1(-h - eta_h)) * denoised
            )
            if old_denoised is not None and h_last is not None:
                r = h_last / h
                if solver_type == "heun":
                    coeff = (-torch.expm1(-h - eta_h)) / (-h - eta_h) + 1
                else:
                    coeff = 0.5 * (-torch.expm1(-h - eta_h))
                x = x + coeff * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = require_noise(noise_sampler, "DPM++ 2M SDE")(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-torch.expm1(-2 * eta_h)).sqrt() * s_noise
        old_denoised = denoised
        h_last = h
        report(callback, i, total, sigmas[i], x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with phi_2, phi_3 corrections from the last two
    denoised values (Lu et al. 2022 "DPM-Solver++" 3M, SDE form; k-diffusion `sample_dpmpp_3m_sde`)."""
    total = len(sigmas) - 1
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-torch.expm1(-h_eta)) * denoised
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if (
                h_2 is not None
                and h_1 is not None
                and denoised_1 is not None
                and denoised_2 is not None
            ):
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and denoised_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                noise = require_noise(noise_sampler, "DPM++ 3M SDE")(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-torch.expm1(-2 * h * eta)).sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        report(callback, i, total, sigmas[i], x, denoised)
    return x

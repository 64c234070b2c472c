"""Samplers, noise schedules and seeds, k-diffusion style (DESIGN.md core).

A denoiser is `denoiser(x, sigma) -> x0`; a sampler is
`sampler(denoiser, x, sigmas, *, noise_sampler=None, callback=None, **options) -> x0`;
schedules are pure functions; every random draw comes from the caller's `noise_sampler`.
"""

from __future__ import annotations

from emaki.sampling import catalog as _catalog  # noqa: F401  (registers the samplers)
from emaki.sampling.common import Denoiser, NoiseSampler, to_d
from emaki.sampling.lcm import lcm_boundary, lcm_model_sigmas, lcm_timestep
from emaki.sampling.noise import BrownianNoiseSampler, brownian_noise_sampler
from emaki.sampling.philox import PhiloxGenerator
from emaki.sampling.progress import StepCallback, StepInfo
from emaki.sampling.registry import Sampler, get_sampler, samplers
from emaki.sampling.rng import SOURCES, ImageRNG, slerp
from emaki.sampling.schedules import (
    SCHEDULES,
    Schedule,
    find_schedule,
    get_sigmas,
    model_sigmas,
    sd1_alphas_cumprod,
    sigma_to_t,
    t_to_sigma,
)
from emaki.sampling.select import (
    img2img_sigmas,
    infotext_schedule_type,
    parse_sampler_name,
    resolve_schedule,
    sigmas_for,
    timestep_sigmas,
)

SAMPLERS: tuple[Sampler, ...] = samplers()
"""Every sampler in A1111's order: `.name`, `.aliases`, `.options` for `/sdapi/v1/samplers`."""

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "SOURCES",
    "BrownianNoiseSampler",
    "Denoiser",
    "ImageRNG",
    "NoiseSampler",
    "PhiloxGenerator",
    "Sampler",
    "Schedule",
    "StepCallback",
    "StepInfo",
    "brownian_noise_sampler",
    "find_schedule",
    "get_sampler",
    "get_sigmas",
    "img2img_sigmas",
    "infotext_schedule_type",
    "lcm_boundary",
    "lcm_model_sigmas",
    "lcm_timestep",
    "model_sigmas",
    "parse_sampler_name",
    "resolve_schedule",
    "sd1_alphas_cumprod",
    "sigma_to_t",
    "sigmas_for",
    "slerp",
    "t_to_sigma",
    "timestep_sigmas",
    "to_d",
]

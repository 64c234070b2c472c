"""The samplers, in A1111 v1.10.1's list order, with its names, aliases and options (specs §9).

Extra aliases beyond A1111's: NovelAI's k-diffusion names (`k_euler_ancestral`,
`k_dpmpp_2s_ancestral`, `k_dpm_2_ancestral`, `k_dpm_adaptive`).
"""

from __future__ import annotations

from types import MappingProxyType

from emaki.sampling.dpm2 import sample_dpm_2, sample_dpm_2_ancestral
from emaki.sampling.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from emaki.sampling.dpmpp_2m import sample_dpmpp_2m
from emaki.sampling.dpmpp_sde import (
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
)
from emaki.sampling.euler import sample_euler, sample_euler_ancestral, sample_heun
from emaki.sampling.lcm import sample_lcm
from emaki.sampling.lms import sample_lms
from emaki.sampling.registry import Sampler, register
from emaki.sampling.restart import sample_restart
from emaki.sampling.timesteps import sample_ddim, sample_plms
from emaki.sampling.unipc import sample_unipc

_HEUN = MappingProxyType({"solver_type": "heun"})
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_NOISE = ("s_noise",)
"""A1111 v1.10.1 `sampler_extra_params`: the settings it forwards besides eta."""
_ETA_1 = MappingProxyType({"eta": 1.0})
"""A1111 passes eta = `eta_ancestral` (default 1.0) to every k-diffusion sampler that takes one;
k-diffusion's own default for DPM fast/adaptive is 0, so the A1111 value is fixed here."""

for _sampler in (
    Sampler("DPM++ 2M", sample_dpmpp_2m, ("k_dpmpp_2m",), default_schedule="Karras"),
    Sampler(
        "DPM++ SDE",
        sample_dpmpp_sde,
        ("k_dpmpp_sde",),
        default_schedule="Karras",
        second_order=True,
        brownian_noise=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM++ 2M SDE",
        sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde",),
        default_schedule="Exponential",
        brownian_noise=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde_heun",),
        defaults=_HEUN,
        default_schedule="Exponential",
        brownian_noise=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM++ 2S a",
        sample_dpmpp_2s_ancestral,
        ("k_dpmpp_2s_a", "k_dpmpp_2s_ancestral"),
        default_schedule="Karras",
        uses_ensd=True,
        second_order=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM++ 3M SDE",
        sample_dpmpp_3m_sde,
        ("k_dpmpp_3m_sde",),
        default_schedule="Exponential",
        discard_penultimate_sigma=True,
        brownian_noise=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "Euler a",
        sample_euler_ancestral,
        ("k_euler_a", "k_euler_ancestral"),
        uses_ensd=True,
    ),
    Sampler("Euler", sample_euler, ("k_euler",), a1111_settings=_CHURN),
    Sampler("LMS", sample_lms, ("k_lms",)),
    Sampler("Heun", sample_heun, ("k_heun",), second_order=True, a1111_settings=_CHURN),
    Sampler(
        "DPM2",
        sample_dpm_2,
        ("k_dpm_2",),
        default_schedule="Karras",
        discard_penultimate_sigma=True,
        second_order=True,
        a1111_settings=_CHURN,
    ),
    Sampler(
        "DPM2 a",
        sample_dpm_2_ancestral,
        ("k_dpm_2_a", "k_dpm_2_ancestral"),
        default_schedule="Karras",
        discard_penultimate_sigma=True,
        uses_ensd=True,
        second_order=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM fast",
        sample_dpm_fast,
        ("k_dpm_fast",),
        defaults=_ETA_1,
        uses_ensd=True,
        a1111_settings=_NOISE,
    ),
    Sampler(
        "DPM adaptive",
        sample_dpm_adaptive,
        ("k_dpm_ad", "k_dpm_adaptive"),
        defaults=_ETA_1,
        uses_ensd=True,
    ),
    Sampler(
        "Restart",
        sample_restart,
        ("restart",),
        default_schedule="Karras",
        second_order=True,
    ),
    Sampler("DDIM", sample_ddim, ("ddim",), default_schedule="Automatic", timesteps=True),
    Sampler("PLMS", sample_plms, ("plms",), default_schedule="Automatic", timesteps=True),
    Sampler("UniPC", sample_unipc, ("unipc",), default_schedule="Automatic", timesteps=True),
    Sampler("LCM", sample_lcm, ("k_lcm",), lcm=True),
):
    register(_sampler)

"""Each sampler equals k-diffusion's reference implementation (1e-4 relative) on a toy denoiser,
given the same sigmas and the same noise draws."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from sampling_helpers import NoiseStream, ToyDenoiser, rel_err

from emaki.sampling import get_sampler, get_sigmas, sigmas_for

TOL = 1e-4

# emaki name -> (k-diffusion function, extra options for both)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("sample_euler", {}),
    "Euler a": ("sample_euler_ancestral", {}),
    "Heun": ("sample_heun", {}),
    "DPM++ 2M": ("sample_dpmpp_2m", {}),
    "LMS": ("sample_lms", {}),
    "DPM2": ("sample_dpm_2", {}),
    "DPM2 a": ("sample_dpm_2_ancestral", {}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", {}),
    "DPM++ SDE": ("sample_dpmpp_sde", {}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {}),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", {}),
}


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _run_both(
    name: str,
    kd_name: str,
    sigmas: torch.Tensor,
    options: dict[str, Any],
    reference_with_stream: Callable[[NoiseStream], Any],
) -> tuple[torch.Tensor, torch.Tensor, NoiseStream, NoiseStream]:
    x = _x() * sigmas[0]
    ours_noise, ref_noise = NoiseStream(x, 7), NoiseStream(x, 7)
    sampler = get_sampler(name)
    ours_options = {k: v for k, v in options.items() if k in sampler.option_names}
    ours = sampler.function(  # the algorithm itself, every option (A1111 forwards fewer)
        ToyDenoiser(),
        x.clone(),
        sigmas,
        noise_sampler=ours_noise,
        **{**sampler.defaults, **ours_options},
    )
    kd = reference_with_stream(ref_noise)
    fn = getattr(kd, kd_name)
    kwargs = dict(options)
    if "noise_sampler" in inspect.signature(fn).parameters:
        kwargs["noise_sampler"] = ref_noise
    ref = fn(ToyDenoiser(), x.clone(), sigmas, disable=True, **kwargs)
    return ours, ref, ours_noise, ref_noise


@pytest.mark.parametrize("schedule", ["Automatic", "Karras"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_k_diffusion(
    name: str, schedule: str, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    kd_name, options = CASES[name]
    sigmas = sigmas_for(get_sampler(name), schedule, 12, sd_sigmas)
    ours, ref, _, _ = _run_both(name, kd_name, sigmas, options, reference_with_stream)
    assert torch.isfinite(ours).all()
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("name", ["Euler", "Heun"])
def test_churn_matches_k_diffusion(
    name: str, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    kd_name, _ = CASES[name]
    sigmas = get_sigmas("Karras", 10, sigma_min=0.03, sigma_max=14.6)
    options = {"s_churn": 2.0, "s_tmin": 0.2, "s_tmax": 5.0, "s_noise": 1.003}
    ours, ref, ours_noise, ref_noise = _run_both(
        name, kd_name, sigmas, options, reference_with_stream
    )
    assert rel_err(ours, ref) < TOL
    assert ours_noise.draws == ref_noise.draws


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_euler_ancestral_eta(
    eta: float, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    sigmas = get_sigmas("Exponential", 9, sigma_min=0.03, sigma_max=14.6)
    ours, ref, _, _ = _run_both(
        "Euler a",
        "sample_euler_ancestral",
        sigmas,
        {"eta": eta, "s_noise": 0.9},
        reference_with_stream,
    )
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize(
    "name", ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DPM2 a", "DPM++ 2S a"]
)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_sde_eta(
    name: str, eta: float, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    kd_name, options = CASES[name]
    sigmas = sigmas_for(get_sampler(name), "Automatic", 8, sd_sigmas)
    ours, ref, _, _ = _run_both(
        name, kd_name, sigmas, {**options, "eta": eta}, reference_with_stream
    )
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("order", [2, 3, 4])
def test_lms_orders(order: int, sd_sigmas: torch.Tensor, reference_with_stream: Any) -> None:
    sigmas = sigmas_for(get_sampler("LMS"), "Karras", 10, sd_sigmas)
    ours, ref, _, _ = _run_both(
        "LMS", "sample_lms", sigmas, {"order": order}, reference_with_stream
    )
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("steps", [5, 6, 7, 12])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_fast_matches_k_diffusion(
    steps: int, eta: float, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    sigmas = sigmas_for(get_sampler("DPM fast"), "Automatic", steps, sd_sigmas)
    x = _x() * sigmas[0]
    ours = get_sampler("DPM fast")(
        ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 5), eta=eta
    )
    kd = reference_with_stream(NoiseStream(x, 99))
    ref = kd.sample_dpm_fast(
        ToyDenoiser(),
        x,
        float(sigmas[-2]),
        float(sigmas[0]),
        steps,
        disable=True,
        eta=eta,
        noise_sampler=NoiseStream(x, 5),
    )
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize(("order", "eta"), [(3, 0.0), (2, 0.0), (3, 1.0)])
def test_dpm_adaptive_matches_k_diffusion(
    order: int, eta: float, sd_sigmas: torch.Tensor, reference_with_stream: Any
) -> None:
    sigmas = sigmas_for(get_sampler("DPM adaptive"), "Automatic", 10, sd_sigmas)
    x = _x() * sigmas[0]
    toy_ours, toy_ref = ToyDenoiser(), ToyDenoiser()
    ours = get_sampler("DPM adaptive")(
        toy_ours, x, sigmas, noise_sampler=NoiseStream(x, 5), eta=eta, order=order
    )
    kd = reference_with_stream(NoiseStream(x, 99))
    ref = kd.sample_dpm_adaptive(
        toy_ref,
        x,
        float(sigmas[-2]),
        float(sigmas[0]),
        disable=True,
        eta=eta,
        order=order,
        noise_sampler=NoiseStream(x, 5),
    )
    assert toy_ours.calls == toy_ref.calls
    assert rel_err(ours, ref) < TOL


def test_dpm_fast_default_eta_is_a1111s(sd_sigmas: torch.Tensor) -> None:
    """A1111 passes eta = 1 (eta_ancestral) to DPM fast/adaptive: they need noise by default."""
    from emaki.errors import SamplerError

    sigmas = sigmas_for(get_sampler("DPM fast"), "Automatic", 6, sd_sigmas)
    x = _x() * sigmas[0]
    with pytest.raises(SamplerError):
        get_sampler("DPM fast")(ToyDenoiser(), x, sigmas)
    get_sampler("DPM fast")(ToyDenoiser(), x, sigmas, eta=0.0)

"""Independent of any reference code: on Gaussian data the probability-flow ODE has a closed
form (x(s) = m + (x_T - m) sqrt((v + s^2) / (v + s_T^2))), so every sampler run as an ODE solver
(eta = 0) must land on it, closer with more steps, faster for higher orders."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from emaki.sampling import get_sampler, get_sigmas

M, V = 0.3, 0.6


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.double().view(-1, 1, 1, 1)
    return ((V * x.double() + s**2 * M) / (V + s**2)).to(x.dtype)


def exact(x_t: torch.Tensor, sigma_t: float, sigma: float) -> torch.Tensor:
    return M + (x_t - M) * ((V + sigma**2) / (V + sigma_t**2)) ** 0.5


# name, options making it deterministic, minimum error ratio for 8 -> 16 steps
CASES: list[tuple[str, dict[str, Any], float]] = [
    ("Euler", {}, 1.6),
    ("Euler a", {"eta": 0.0}, 1.6),
    ("Heun", {}, 3.0),
    ("LMS", {}, 3.0),
    ("DPM2", {}, 3.0),
    ("DPM2 a", {"eta": 0.0}, 3.0),
    ("DPM++ 2M", {}, 3.0),
    ("DPM++ 2S a", {"eta": 0.0}, 3.0),
    ("DPM++ SDE", {"eta": 0.0}, 3.0),
    ("DPM++ 2M SDE", {"eta": 0.0}, 3.0),
    ("DPM++ 2M SDE Heun", {"eta": 0.0}, 3.0),
    ("DPM++ 3M SDE", {"eta": 0.0}, 3.0),
    ("Restart", {"restart_list": {}}, 3.0),
]


@pytest.mark.parametrize(("name", "options", "min_ratio"), CASES)
def test_ode_samplers_converge_to_closed_form(
    name: str, options: dict[str, Any], min_ratio: float
) -> None:
    x_t = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(0)) * 14.6
    errors = []
    for steps in (8, 16):
        sigmas = get_sigmas("Karras", steps, sigma_min=0.03, sigma_max=14.6)
        got = get_sampler(name)(gaussian_denoiser, x_t, sigmas, **options)
        want = exact(x_t, 14.6, 0.0)
        errors.append(float((got - want).norm() / want.norm()))
    assert errors[1] < (0.1 if min_ratio < 2 else 0.035)
    assert errors[0] / max(errors[1], 1e-7) > min_ratio or errors[1] < 1e-5


@pytest.mark.parametrize(
    ("name", "options"),
    [("DPM fast", {}), ("DPM adaptive", {"rtol": 1e-4, "atol": 1e-5})],
)
def test_dpm_solver_reaches_sigma_min(name: str, options: dict[str, Any]) -> None:
    x_t = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(1)) * 14.6
    sigmas = get_sigmas("Karras", 24, sigma_min=0.03, sigma_max=14.6)
    got = get_sampler(name)(gaussian_denoiser, x_t, sigmas, eta=0.0, **options)
    want = exact(x_t, 14.6, 0.03)  # DPM-Solver stops at sigma_min
    assert float((got - want).norm() / want.norm()) < 2e-3

"""Sigma schedules equal A1111 v1.10.1's (`sd_schedulers.py`, k-diffusion's `get_sigmas_*`)."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import pytest
import torch

from emaki.errors import SamplerError
from emaki.sampling import (
    SCHEDULES,
    find_schedule,
    get_sampler,
    get_sigmas,
    lcm_model_sigmas,
    model_sigmas,
    sd1_alphas_cumprod,
    sigma_to_t,
    sigmas_for,
    t_to_sigma,
)
from emaki.sampling.schedules import AYS_SD1, beta_cdf, beta_ppf

MS = model_sigmas(sd1_alphas_cumprod())
LO, HI = float(MS[0]), float(MS[-1])


def test_sd1_model_sigmas() -> None:
    assert MS.shape == (1000,) and MS.dtype == torch.float32
    assert bool((MS[1:] > MS[:-1]).all())
    assert LO == pytest.approx(0.0292, abs=1e-4) and HI == pytest.approx(14.6146, abs=1e-4)


def test_schedule_list_is_a1111s() -> None:
    assert [s.label for s in SCHEDULES] == [
        "Automatic",
        "Uniform",
        "Karras",
        "Exponential",
        "Polyexponential",
        "SGM Uniform",
        "KL Optimal",
        "Align Your Steps",
        "Simple",
        "Normal",
        "DDIM",
        "Beta",
    ]
    assert find_schedule("sgmuniform").label == "SGM Uniform"
    assert find_schedule("align_your_steps").label == "Align Your Steps"
    with pytest.raises(SamplerError, match="Karras"):
        find_schedule("karas")


@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_k_diffusion_schedules(n: int, kdiff: Any) -> None:
    assert torch.equal(
        get_sigmas("Karras", n, sigma_min=LO, sigma_max=HI), kdiff.get_sigmas_karras(n, LO, HI)
    )
    assert torch.equal(
        get_sigmas("karras", n, sigma_min=LO, sigma_max=HI, rho=3.0),
        kdiff.get_sigmas_karras(n, LO, HI, rho=3.0),
    )
    assert torch.equal(
        get_sigmas("Exponential", n, sigma_min=LO, sigma_max=HI),
        kdiff.get_sigmas_exponential(n, LO, HI),
    )
    assert torch.equal(
        get_sigmas("Polyexponential", n, sigma_min=LO, sigma_max=HI, rho=2.0),
        kdiff.get_sigmas_polyexponential(n, LO, HI, rho=2.0),
    )


@pytest.mark.parametrize("n", [1, 3, 20, 33])
def test_model_schedules(n: int, kdiff_external: Any) -> None:
    """Uniform, SGM Uniform, Normal, Simple and DDIM, written out from A1111's definitions over
    k-diffusion's DiscreteSchedule."""
    ds = kdiff_external.DiscreteSchedule(MS, quantize=False)
    kw = {"sigma_min": LO, "sigma_max": HI, "model_sigmas": MS}
    assert torch.equal(get_sigmas("Uniform", n, **kw), ds.get_sigmas(n))
    assert torch.equal(get_sigmas("Automatic", n, **kw), ds.get_sigmas(n))

    start, end = ds.sigma_to_t(torch.tensor(HI)), ds.sigma_to_t(torch.tensor(LO))
    sgm = [float(ds.t_to_sigma(t)) for t in torch.linspace(start, end, n + 1)[:-1]] + [0.0]
    assert torch.equal(get_sigmas("SGM Uniform", n, **kw), torch.tensor(sgm))
    normal = [float(ds.t_to_sigma(t)) for t in torch.linspace(start, end, n)] + [0.0]
    assert torch.equal(get_sigmas("Normal", n, **kw), torch.tensor(normal))

    simple = [float(MS[-(1 + int(i * 1000 / n))]) for i in range(n)] + [0.0]
    assert torch.equal(get_sigmas("Simple", n, **kw), torch.tensor(simple))
    ddim = [float(MS[t]) for t in range(1, 1000, 1000 // n)][::-1] + [0.0]
    assert torch.equal(get_sigmas("DDIM", n, **kw), torch.tensor(ddim))


def test_sigma_t_mapping_matches_k_diffusion(kdiff_external: Any) -> None:
    ds = kdiff_external.DiscreteSchedule(MS, quantize=False)
    s = torch.tensor([0.03, 0.5, 1.0, 7.7, 14.0, float(MS[500])])
    assert torch.allclose(sigma_to_t(s, MS), ds.sigma_to_t(s))
    t = torch.tensor([0.0, 0.5, 10.25, 998.9, 999.0])
    assert torch.equal(t_to_sigma(t, MS), ds.t_to_sigma(t))
    assert float(sigma_to_t(torch.tensor(float(MS[321])), MS)) == pytest.approx(321, abs=1e-3)


def test_kl_optimal() -> None:
    got = get_sigmas("KL Optimal", 5, sigma_min=LO, sigma_max=HI)
    want = [math.tan(i / 5 * math.atan(LO) + (1 - i / 5) * math.atan(HI)) for i in range(6)]
    assert torch.allclose(got, torch.tensor(want))
    assert float(got[-1]) == pytest.approx(LO, rel=1e-5)  # A1111 v1.10.1: no final 0


def test_align_your_steps() -> None:
    assert get_sigmas("Align Your Steps", 11, sigma_min=LO, sigma_max=HI).tolist() == pytest.approx(
        [*AYS_SD1, 0.0]
    )
    for n in (5, 20, 31):
        got = get_sigmas("Align Your Steps", n, sigma_min=LO, sigma_max=HI)
        xs = np.linspace(0, 1, len(AYS_SD1))
        ys = np.log(np.array(AYS_SD1[::-1]))
        want = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
        assert got.shape == (n + 1,) and float(got[-1]) == 0.0
        np.testing.assert_allclose(got[:-1].numpy(), want, rtol=1e-6)


def test_beta_schedule() -> None:
    got = get_sigmas("Beta", 8, sigma_min=LO, sigma_max=HI)
    assert got.shape == (9,) and float(got[-1]) == 0.0
    assert float(got[0]) == pytest.approx(HI) and float(got[-2]) == pytest.approx(LO)
    assert bool((got[1:] <= got[:-1]).all())
    # symmetric Beta(0.6, 0.6): the middle quantile is 1/2
    assert beta_ppf(0.5, 0.6, 0.6) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(("a", "b"), [(0.6, 0.6), (0.5, 2.0), (3.0, 1.5)])
def test_beta_ppf_against_reference(a: float, b: float) -> None:
    qs = [0.001, 0.1, 0.37, 0.5, 0.9, 0.999]
    if importlib.util.find_spec("scipy") is not None:
        from scipy import stats  # type: ignore[import-untyped]

        want = [float(stats.beta.ppf(q, a, b)) for q in qs]
    else:
        import mpmath

        want = [
            float(
                mpmath.findroot(
                    lambda x, q=q: mpmath.betainc(a, b, 0, x, regularized=True) - q,
                    (1e-12, 1 - 1e-12),
                    solver="bisect",
                )
            )
            for q in qs
        ]
    got = [beta_ppf(q, a, b) for q in qs]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert [beta_cdf(x, a, b) for x in got] == pytest.approx(qs, rel=1e-9)


def test_discard_penultimate_sigma() -> None:
    dpm2 = sigmas_for(get_sampler("DPM2"), "Automatic", 10, MS)
    karras11 = get_sigmas("Karras", 11, sigma_min=LO, sigma_max=HI)
    assert torch.equal(dpm2, torch.cat([karras11[:-2], karras11[-1:]]))
    assert len(dpm2) == 11
    euler = sigmas_for(get_sampler("Euler"), "Karras", 10, MS, discard_penultimate_sigma=True)
    assert torch.equal(euler, dpm2)
    three_m = sigmas_for(get_sampler("DPM++ 3M SDE"), "Automatic", 10, MS)
    exp11 = get_sigmas("Exponential", 11, sigma_min=LO, sigma_max=HI)
    assert torch.equal(three_m, torch.cat([exp11[:-2], exp11[-1:]]))


def test_lcm_schedules_use_lcm_timesteps() -> None:
    table = lcm_model_sigmas(MS)
    lcm = get_sampler("LCM")
    assert torch.equal(
        sigmas_for(lcm, "Automatic", 6, MS),
        get_sigmas("Uniform", 6, sigma_min=0, sigma_max=0, model_sigmas=table),
    )
    karras = sigmas_for(lcm, "Karras", 6, MS)
    assert float(karras[-2]) == pytest.approx(float(MS[19]), rel=1e-5)


@pytest.mark.parametrize("schedule", [s.label for s in SCHEDULES])
def test_every_schedule_for_every_sampler(schedule: str) -> None:
    for sampler in {get_sampler(n) for n in ("Euler", "DPM2", "LCM", "DDIM")}:
        sigmas = sigmas_for(sampler, schedule, 9, MS)
        assert torch.isfinite(sigmas).all() and bool((sigmas[1:] <= sigmas[:-1]).all())
        assert sigmas.dtype == torch.float32


def test_needs_model_sigmas() -> None:
    with pytest.raises(SamplerError, match="model_sigmas"):
        get_sigmas("Simple", 4, sigma_min=LO, sigma_max=HI)
    with pytest.raises(SamplerError, match="steps"):
        get_sigmas("Karras", 0, sigma_min=LO, sigma_max=HI)

"""DDIM, PLMS, UniPC, Restart and LCM against independent references on toy models."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from sampling_helpers import NoiseStream, ToyDenoiser, rel_err

from emaki.sampling import (
    get_sampler,
    get_sigmas,
    lcm_boundary,
    lcm_model_sigmas,
    lcm_timestep,
    model_sigmas,
    sd1_alphas_cumprod,
    sigmas_for,
)

TOL = 1e-4
ABAR = sd1_alphas_cumprod()
MS = model_sigmas(ABAR)


class GaussianDenoiser:
    """Exact D(x; sigma) for data ~ N(m, v): the probability-flow ODE has a closed form."""

    m, v = 0.3, 0.6

    def __init__(self) -> None:
        self.model_sigmas = MS
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = sigma.double().view(-1, 1, 1, 1)
        return ((self.v * x.double() + s**2 * self.m) / (self.v + s**2)).to(x.dtype)

    def exact(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """x(sigma_to) on the ODE trajectory through x at sigma_from."""
        return self.m + (x - self.m) * ((self.v + sigma_to**2) / (self.v + sigma_from**2)) ** 0.5


def eps_model(toy: Any, x_vp: torch.Tensor, t: int) -> torch.Tensor:
    """An LDM-style eps(x_t, t) model built from a sigma-space toy denoiser."""
    s = MS[t].double()
    x = x_vp.double() * (1 + s**2) ** 0.5
    return ((x - toy(x.float(), MS[t] * x.new_ones(x.shape[0]).float()).double()) / s).float()


def a1111_timesteps(steps: int) -> list[int]:
    return [min(t + 1, 999) for t in range(0, 1000, 1000 // steps)]


def ddim_reference(
    toy: Any, x: torch.Tensor, steps: int, eta: float, noise: NoiseStream
) -> torch.Tensor:
    """Song et al. 2021 eq. 12 over A1111's timesteps, in VP scaling with abar from the table."""
    ts = a1111_timesteps(steps)
    x = x.double()
    for i in range(len(ts) - 1, 0, -1):
        a, a_prev = ABAR[ts[i]].double(), ABAR[ts[i - 1]].double()
        e = eps_model(toy, x.float(), ts[i]).double()
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        s = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - s**2).sqrt() * e
        if eta:
            x = x + s * noise().double()
    return x.float()


def plms_reference(toy: Any, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Liu et al. 2022 PLMS (LDM's PLMSSampler) over A1111's timesteps."""
    ts = a1111_timesteps(steps)
    x = x.double()
    history: list[torch.Tensor] = []

    def step(
        x: torch.Tensor, e: torch.Tensor, a: torch.Tensor, a_prev: torch.Tensor
    ) -> torch.Tensor:
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e

    for i in range(len(ts) - 1, 0, -1):
        a, a_prev = ABAR[ts[i]].double(), ABAR[ts[i - 1]].double()
        e = eps_model(toy, x.float(), ts[i]).double()
        if not history:
            e2 = eps_model(toy, step(x, e, a, a_prev).float(), ts[i - 1]).double()
            e_prime = (e + e2) / 2
        elif len(history) == 1:
            e_prime = (3 * e - history[-1]) / 2
        elif len(history) == 2:
            e_prime = (23 * e - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            e_prime = (55 * e - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = step(x, e_prime, a, a_prev)
        history = (history + [e])[-3:]
    return x.float()


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [5, 20])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_matches_reference(steps: int, eta: float) -> None:
    sampler = get_sampler("DDIM")
    sigmas = sigmas_for(sampler, "Automatic", steps, MS)
    x = sampler.initial_latent(_noise(), sigmas[0])
    ours = sampler(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 3), eta=eta)
    ref = ddim_reference(ToyDenoiser(), _noise(), steps, eta, NoiseStream(x, 3))
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("steps", [3, 8, 20])
def test_plms_matches_reference(steps: int) -> None:
    sampler = get_sampler("PLMS")
    sigmas = sigmas_for(sampler, "Automatic", steps, MS)
    toy = ToyDenoiser()
    ours = sampler(toy, _noise(), sigmas)
    assert rel_err(ours, plms_reference(ToyDenoiser(), _noise(), steps)) < TOL
    assert toy.calls == len(sigmas)  # one extra call on the first step


def test_timestep_sigmas_are_a1111s() -> None:
    sigmas = sigmas_for(get_sampler("DDIM"), "Karras", 20, MS)
    assert torch.equal(sigmas, MS[a1111_timesteps(20)].flip(0))
    assert len(sigmas_for(get_sampler("DDIM"), "Automatic", 6, MS)) == 7  # range(0, 1000, 166)


def test_timestep_initial_latent() -> None:
    ddim, euler = get_sampler("DDIM"), get_sampler("Euler")
    noise, init = _noise(1), _noise(2)
    s = torch.tensor(3.0)
    assert torch.equal(ddim.initial_latent(noise, s), noise)
    assert torch.allclose(euler.initial_latent(noise, s), noise * 3)
    abar = 1 / (1 + 9.0)
    want = init * abar**0.5 + noise * (1 - abar) ** 0.5
    assert torch.allclose(ddim.initial_latent(noise, s, init), want)
    assert torch.allclose(euler.initial_latent(noise, s, init), init + 3 * noise)


def _vp_exact(
    toy: GaussianDenoiser, noise: torch.Tensor, sigma_start: float, sigma_end: float
) -> torch.Tensor:
    x = noise.double() * (1 + sigma_start**2) ** 0.5
    return (toy.exact(x, sigma_start, sigma_end) / (1 + sigma_end**2) ** 0.5).float()


@pytest.mark.parametrize("name", ["DDIM", "PLMS", "UniPC"])
def test_timestep_samplers_solve_the_ode(name: str) -> None:
    """On Gaussian data the PF-ODE is solved in closed form; errors shrink with steps."""
    sampler = get_sampler(name)
    errors = []
    for steps in (10, 40):
        sigmas = sigmas_for(sampler, "Automatic", steps, MS)
        toy = GaussianDenoiser()
        got = sampler(toy, _noise(), sigmas)
        if name == "UniPC":  # integrates from t = 1 (timestep 999) to t = 1/N (timestep 0)
            want = _vp_exact(toy, _noise(), float(MS[-1]), float(MS[0]))
        else:
            want = _vp_exact(toy, _noise(), float(sigmas[0]), float(sigmas[-1]))
        errors.append(rel_err(got, want))
    # uniform timesteps put a long step in log-SNR at the end: slow but steady convergence
    assert errors[1] < errors[0] / 2
    assert errors[1] < 0.04


@pytest.mark.parametrize(
    ("variant", "skip_type", "order"),
    [
        ("bh1", "time_uniform", 3),
        ("bh2", "time_uniform", 3),
        ("bh1", "logSNR", 2),
        ("bh2", "time_quadratic", 1),
    ],
)
def test_unipc_variants(variant: str, skip_type: str, order: int) -> None:
    toy = GaussianDenoiser()
    sigmas = sigmas_for(get_sampler("UniPC"), "Automatic", 15, MS)
    got = get_sampler("UniPC")(
        toy, _noise(), sigmas, variant=variant, skip_type=skip_type, order=order
    )
    assert rel_err(got, _vp_exact(toy, _noise(), float(MS[-1]), float(MS[0]))) < 5e-2
    assert toy.calls == len(sigmas)  # one evaluation per step: no corrector call on the last step


@pytest.mark.parametrize(("order", "min_ratio"), [(1, 3.5), (2, 6.0)])
def test_unipc_convergence_order(order: int, min_ratio: float) -> None:
    """UniPC-p is of order p + 1 (Zhao et al. 2023, Thm 3.1): halving an even log-SNR step
    cuts the error by about 2^(p+1)."""
    errs = []
    for steps in (10, 20):
        toy = GaussianDenoiser()
        got = get_sampler("UniPC")(
            toy, _noise(), torch.ones(steps), skip_type="logSNR", order=order
        )
        errs.append(rel_err(got, _vp_exact(toy, _noise(), float(MS[-1]), float(MS[0]))))
    assert errs[0] / errs[1] > min_ratio


def test_restart_without_restarts_is_heun(kdiff: Any) -> None:
    sigmas = get_sigmas("Karras", 12, sigma_min=0.03, sigma_max=14.6)
    x = _noise() * sigmas[0]
    ours = get_sampler("Restart")(ToyDenoiser(), x, sigmas)
    ref = kdiff.sample_heun(ToyDenoiser(), x, sigmas, disable=True)
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("steps", [20, 40])
def test_restart_matches_segment_reference(steps: int, kdiff: Any) -> None:
    """Xu et al. 2023 with A1111's defaults, built from k-diffusion Heun segments."""
    sigmas = sigmas_for(get_sampler("Restart"), "Automatic", steps, MS)
    x = _noise() * sigmas[0]
    ours = get_sampler("Restart")(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 4))

    k, times = (9, 1) if steps < 36 else (steps // 4, 2)
    main = kdiff.get_sigmas_karras(steps - k * times, float(sigmas[-2]), float(sigmas[0]))
    i = int((main - 0.1).abs().argmin())
    j = int((main - 2.0).abs().argmin())
    up = kdiff.get_sigmas_karras(k + 1, float(main[i]), float(main[j]))[:-1]
    noise = NoiseStream(x, 4)
    ref = kdiff.sample_heun(ToyDenoiser(), x, main[: i + 1], disable=True)
    for _ in range(times):
        ref = ref + noise() * (up[0] ** 2 - main[i] ** 2) ** 0.5
        ref = kdiff.sample_heun(ToyDenoiser(), ref, up, disable=True)
    ref = kdiff.sample_heun(ToyDenoiser(), ref, main[i:], disable=True)
    assert rel_err(ours, ref) < TOL


def test_lcm_sampler_and_schedule() -> None:
    sampler = get_sampler("LCM")
    sigmas = sigmas_for(sampler, "Automatic", 4, MS)
    table = lcm_model_sigmas(MS)
    assert len(table) == 50 and torch.equal(table, MS[19::20])
    assert (
        torch.isclose(sigmas[0], MS[999]) and torch.isclose(sigmas[-2], MS[19]) and sigmas[-1] == 0
    )
    x = _noise() * sigmas[0]
    toy, noise = ToyDenoiser(), NoiseStream(x, 2)
    ours = sampler(toy, x, sigmas, noise_sampler=NoiseStream(x, 2))
    ref = x
    for a, b in itertools.pairwise(sigmas):
        ref = ToyDenoiser()(ref, a * ref.new_ones(2))
        if b > 0:
            ref = ref + b * noise()
    assert torch.allclose(ours, ref)


def test_lcm_denoiser_helpers() -> None:
    sigma = torch.tensor([float(MS[500]), float(MS[999]), float(MS[3])])
    assert lcm_timestep(sigma, MS).tolist() == [499, 999, 19]
    x, x0 = torch.ones(3, 1, 1, 1), torch.zeros(3, 1, 1, 1)
    out = lcm_boundary(x, x0, sigma, MS)
    s = torch.tensor([4990.0, 9990.0, 190.0]).view(3, 1, 1, 1)
    assert torch.allclose(out, 0.25 / (s**2 + 0.25))

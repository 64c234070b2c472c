"""DPM-Solver fast (fixed steps) and adaptive (DPM-Solver-12/23 with PID step-size control):
Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
Around 10 Steps", Algorithms 1-2 and §4 (noise prediction, t = -log sigma), as k-diffusion
implements them (`sample_dpm_fast`, `sample_dpm_adaptive`), plus k-diffusion's ancestral eta."""

from __future__ import annotations

import math

import torch

from emaki.errors import SamplerError
from emaki.sampling.common import Denoiser, NoiseSampler, ancestral_step, report, require_noise
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t(sigma: Tensor) -> Tensor:
    return -sigma.log()


class _Solver:
    """Noise-prediction DPM-Solver steps of order 1-3 over t = -log sigma (Lu et al. 2022, Alg. 1)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """eps(x, t) = (x - D(x; sigma(t))) / sigma(t)."""
        sigma = _sigma(t)
        return (x - self.denoiser(x, sigma * x.new_ones([x.shape[0]]))) / sigma

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, eps: Tensor) -> Tensor:
        """DPM-Solver-1 (= DDIM): x - sigma_next (e^h - 1) eps."""
        return x - _sigma(t_next) * torch.expm1(t_next - t) * eps

    def step_2(
        self, x: Tensor, t: Tensor, t_next: Tensor, eps: Tensor, r1: float = 0.5
    ) -> tuple[Tensor, Tensor]:
        """DPM-Solver-2 with intermediate point t + r1 h; returns (x_next, eps at the intermediate point)."""
        h = t_next - t
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * torch.expm1(r1 * h) * eps
        eps_r1 = self.eps(u1, s1)
        x_2 = (
            x
            - _sigma(t_next) * torch.expm1(h) * eps
            - _sigma(t_next) / (2 * r1) * torch.expm1(h) * (eps_r1 - eps)
        )
        return x_2, eps_r1

    def step_3(
        self,
        x: Tensor,
        t: Tensor,
        t_next: Tensor,
        eps: Tensor,
        eps_r1: Tensor | None = None,
        r1: float = 1 / 3,
        r2: float = 2 / 3,
    ) -> Tensor:
        """DPM-Solver-3 with intermediate points t + r1 h, t + r2 h (Lu et al. 2022, Algorithm 5)."""
        h = t_next - t
        s1, s2 = t + r1 * h, t + r2 * h
        if eps_r1 is None:
            u1 = x - _sigma(s1) * torch.expm1(r1 * h) * eps
            eps_r1 = self.eps(u1, s1)
        u2 = (
            x
            - _sigma(s2) * torch.expm1(r2 * h) * eps
            - _sigma(s2) * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(u2, s2)
        return (
            x
            - _sigma(t_next) * torch.expm1(h) * eps
            - _sigma(t_next) / r2 * (torch.expm1(h) / h - 1) * (eps_r2 - eps)
        )


def _range(
    sigmas: Tensor, sigma_min: float | None, sigma_max: float | None
) -> tuple[Tensor, Tensor]:
    lo = sigmas[sigmas > 0].min() if sigma_min is None else torch.tensor(sigma_min)
    hi = sigmas.max() if sigma_max is None else torch.tensor(sigma_max)
    if lo <= 0 or hi <= 0:
        raise SamplerError("DPM-Solver: sigma_min and sigma_max must be positive")
    return lo.to(torch.float32), hi.to(torch.float32)


def _ancestral_target(
    t: Tensor, t_next: Tensor, t_end: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """Where the deterministic step goes (t_next_) and how much noise follows (su)."""
    if not eta:
        return t_next, t_next.new_zeros([])
    sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_next_ = torch.minimum(t_end, _t(sd))
    su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
    return t_next_, su


@torch.no_grad()
def sample_dpm_fast(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    n: int | None = None,
) -> Tensor:
    """DPM-Solver-fast: n evaluations as floor(n/3) + 1 uniform steps in t of order 3, 3, ..., then
    2, 1 or n mod 3 (Lu et al. 2022, §3.4). Integrates from sigmas.max() to the smallest nonzero
    sigma in len(sigmas) - 1 evaluations unless `sigma_min`, `sigma_max`, `n` are given (A1111
    passes the model's sigma range and `steps` for txt2img; those coincide for Automatic/Karras).
    Like k-diffusion it ends at sigma_min, not 0.
    """
    lo, hi = _range(sigmas, sigma_min, sigma_max)
    nfe = len(sigmas) - 1 if n is None else n
    t_start, t_end = _t(hi), _t(lo)
    if eta and not t_end > t_start:
        raise SamplerError("DPM-Solver: eta must be 0 for reverse sampling")
    solver = _Solver(denoiser)
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = _ancestral_target(t, t_next, t_end.to(ts.device), eta)
        eps = solver.eps(x, t)
        denoised = x - _sigma(t) * eps
        if order == 1:
            x = solver.step_1(x, t, t_next_, eps)
        elif order == 2:
            x, _ = solver.step_2(x, t, t_next_, eps)
        else:
            x = solver.step_3(x, t, t_next_, eps)
        if eta:
            noise = require_noise(noise_sampler, "DPM fast")(_sigma(t), _sigma(t_next))
            x = x + su * s_noise * noise
        report(callback, i, len(orders), _sigma(t), x, denoised)
    return x


class PIDStepSizeController:
    """PID control of the step size h (Söderlind 2003, "Digital filters in adaptive time-stepping"),
    with the arctan limiter 1 + atan(f - 1); accept when the factor >= `accept_safety`."""

    def __init__(
        self,
        h: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        order: float = 1,
        accept_safety: float = 0.81,
        eps: float = 1e-8,
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error] * 3
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """DPM-Solver-12 / -23 with embedded error estimate and PID step-size control (Lu et al. 2022,
    Algorithm 4). Integrates from sigmas.max() to the smallest nonzero sigma (or `sigma_min`,
    `sigma_max`); the number of steps is its own. The callback reports every attempted step, with
    `total` = len(sigmas) - 1 or more.
    """
    if order not in (2, 3):
        raise SamplerError(f"DPM adaptive order {order}; expected 2 or 3")
    lo, hi = _range(sigmas, sigma_min, sigma_max)
    t_start, t_end = _t(hi).to(x.device), _t(lo).to(x.device)
    forward = bool(t_end > t_start)
    if not forward and eta:
        raise SamplerError("DPM-Solver: eta must be 0 for reverse sampling")
    solver = _Solver(denoiser)
    h0 = abs(h_init) * (1 if forward else -1)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s = t_start
    x_prev = x
    pid = PIDStepSizeController(h0, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    steps = 0
    nominal = len(sigmas) - 1
    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        t_, su = _ancestral_target(s, t, t_end, eta)
        eps = solver.eps(x, s)
        denoised = x - _sigma(s) * eps
        if order == 2:
            x_low = solver.step_1(x, s, t_, eps)
            x_high, _ = solver.step_2(x, s, t_, eps)
        else:
            x_low, eps_r1 = solver.step_2(x, s, t_, eps, r1=1 / 3)
            x_high = solver.step_3(x, s, t_, eps, eps_r1)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(float(error)):
            x_prev = x_low
            x = x_high
            if eta:
                noise = require_noise(noise_sampler, "DPM adaptive")(_sigma(s), _sigma(t))
                x = x + su * s_noise * noise
            s = t
        steps += 1
        report(callback, steps - 1, max(nominal, steps), _sigma(s), x, denoised)
    return x

"""Noise schedules: SD's discrete sigmas and the sigma lists A1111 v1.10.1 feeds its samplers.

Every schedule returns a descending float32 tensor of n + 1 sigmas ending in 0 (KL Optimal,
like A1111's, ends at sigma_min instead). Names follow A1111 `modules/sd_schedulers.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from emaki.errors import SamplerError

Tensor = torch.Tensor


def model_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """SD's discrete sigmas, ascending: sigma_t = sqrt((1 - abar_t) / abar_t) (Karras et al. 2022, Table 1, VP)."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def sd1_alphas_cumprod(
    steps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """SD 1.x training schedule ("scaled_linear"): betas = linspace(sqrt b0, sqrt b1)^2, abar = cumprod(1 - beta).

    Computed in float64 and returned as `dtype`: float32 is what LDM's `register_schedule`
    stores in checkpoints.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(dtype)


def _append_zero(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros([1])])


def sigma_to_t(sigma: Tensor, sigmas: Tensor) -> Tensor:
    """Fractional timestep of `sigma`: linear interpolation of log sigma between the model's
    timesteps (k-diffusion `DiscreteSchedule.sigma_to_t`, unquantized)."""
    log_sigmas = sigmas.log()
    log_sigma = sigma.log().reshape(-1)
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high = low + 1
    lo, hi = log_sigmas[low], log_sigmas[high]
    w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
    return ((1 - w) * low + w * high).view(sigma.shape)


def t_to_sigma(t: Tensor, sigmas: Tensor) -> Tensor:
    """Sigma at fractional timestep t: exp of the linear interpolation of log-sigma (k-diffusion `DiscreteSchedule`)."""
    log_sigmas = sigmas.log()
    t = t.float()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def uniform_sigmas(n: int, model_sigmas: Tensor) -> Tensor:
    """n sigmas at timesteps linspace(999, 0, n) of the model's schedule, then 0 (k-diffusion `get_sigmas`)."""
    t = torch.linspace(len(model_sigmas) - 1, 0, n)
    return _append_zero(t_to_sigma(t, model_sigmas))


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Sigmas evenly spaced in log sigma from sigma_max to sigma_min, then 0 (k-diffusion)."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """log sigma = ramp^rho (log s_max - log s_min) + log s_min with ramp = linspace(1, 0, n), then 0 (k-diffusion)."""
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(
        torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    )


def sgm_uniform_sigmas(n: int, sigma_min: float, sigma_max: float, model_sigmas: Tensor) -> Tensor:
    """n sigmas at timesteps evenly spaced from t(sigma_max) to t(sigma_min), last one dropped
    (linspace over n + 1 points), then 0 — SGM's "trailing" spacing (A1111 `sgm_uniform`)."""
    start = sigma_to_t(torch.tensor(sigma_max), model_sigmas)
    end = sigma_to_t(torch.tensor(sigma_min), model_sigmas)
    ts = torch.linspace(float(start), float(end), n + 1)[:-1]
    return torch.tensor([float(t_to_sigma(t, model_sigmas)) for t in ts] + [0.0])


def normal_sigmas(n: int, sigma_min: float, sigma_max: float, model_sigmas: Tensor) -> Tensor:
    """n sigmas at timesteps linspace(t(sigma_max), t(sigma_min), n), then 0 (A1111 `normal_scheduler`)."""
    start = sigma_to_t(torch.tensor(sigma_max), model_sigmas)
    end = sigma_to_t(torch.tensor(sigma_min), model_sigmas)
    ts = torch.linspace(float(start), float(end), n)
    return torch.tensor([float(t_to_sigma(t, model_sigmas)) for t in ts] + [0.0])


def simple_sigmas(n: int, model_sigmas: Tensor) -> Tensor:
    """Every (1000/n)-th model sigma from the top, then 0 (A1111/ComfyUI `simple_scheduler`)."""
    stride = len(model_sigmas) / n
    return torch.tensor([float(model_sigmas[-(1 + int(i * stride))]) for i in range(n)] + [0.0])


def ddim_sigmas(n: int, model_sigmas: Tensor) -> Tensor:
    """Model sigmas at timesteps 1, 1 + s, 1 + 2s, ... (s = 1000 // n), descending, then 0.

    As A1111's `ddim_scheduler`: the count is len(range(1, 1000, s)), which can exceed n.
    """
    stride = max(len(model_sigmas) // n, 1)
    picked = [float(model_sigmas[t]) for t in range(1, len(model_sigmas), stride)]
    return torch.tensor(picked[::-1] + [0.0])


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """sigma_i = tan((i/n) atan(sigma_min) + (1 - i/n) atan(sigma_max)), i = 0..n (Sabour et al. 2024,
    "Align Your Steps", KL-optimal schedule). Like A1111 v1.10.1 it ends at sigma_min, not 0."""
    a_min = torch.arctan(torch.tensor(sigma_min))
    a_max = torch.arctan(torch.tensor(sigma_max))
    i = torch.arange(n + 1)
    return torch.tan(i / n * a_min + (1.0 - i / n) * a_max)


AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
"""Align Your Steps 10-step sigmas for SD 1.5 (Sabour et al. 2024, NVIDIA's published table)."""


def align_your_steps_sigmas(n: int, table: Sequence[float] = AYS_SD1) -> Tensor:
    """The AYS table, log-linearly interpolated to n points when n != len(table), then 0."""
    if n == len(table):
        return torch.tensor([*table, 0.0])
    xs = torch.linspace(0, 1, len(table), dtype=torch.float64)
    ys = torch.tensor(table[::-1], dtype=torch.float64).log()
    new_xs = torch.linspace(0, 1, n, dtype=torch.float64)
    idx = torch.searchsorted(xs, new_xs, right=True).clamp(1, len(table) - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    new_ys = torch.where(new_xs >= xs[-1], ys[-1], y0 + (new_xs - x0) * (y1 - y0) / (x1 - x0))
    return torch.tensor(new_ys.exp().flip(0).tolist() + [0.0])


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b) (Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of `beta_cdf` in x, by bisection to float64 resolution (replaces scipy's `beta.ppf`)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def beta_sigmas(
    n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6
) -> Tensor:
    """sigma = sigma_min + ppf_Beta(alpha, beta)(1 - i/(n-1)) (sigma_max - sigma_min), then 0
    (Lee et al. 2024, "Beta Sampling is All You Need"; A1111 defaults alpha = beta = 0.6)."""
    ramp = [1.0 - float(v) for v in torch.linspace(0, 1, n, dtype=torch.float64)]
    return torch.tensor(
        [sigma_min + beta_ppf(q, alpha, beta) * (sigma_max - sigma_min) for q in ramp] + [0.0]
    )


@dataclass(frozen=True)
class Schedule:
    """A schedule type as `/sdapi/v1/schedulers` lists it (A1111 `sd_schedulers.Scheduler`)."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False


SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic"),
    Schedule("uniform", "Uniform", need_inner_model=True),
    Schedule("karras", "Karras", default_rho=7.0),
    Schedule("exponential", "Exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple", need_inner_model=True),
    Schedule("normal", "Normal", need_inner_model=True),
    Schedule("ddim", "DDIM", need_inner_model=True),
    Schedule("beta", "Beta", need_inner_model=True),
)


_USES_MODEL_SIGMAS = {"automatic", "uniform", "sgm_uniform", "simple", "normal", "ddim"}


def find_schedule(name: str) -> Schedule:
    """The schedule called `name` (label, id or alias, any case) or a `SamplerError` listing them."""
    key = name.strip().lower()
    for s in SCHEDULES:
        if key in (s.name, s.label.lower(), *(a.lower() for a in s.aliases)):
            return s
    valid = ", ".join(s.label for s in SCHEDULES)
    raise SamplerError(f"unknown schedule {name!r}; expected one of: {valid}")


def get_sigmas(
    schedule: str,
    n: int,
    *,
    sigma_min: float,
    sigma_max: float,
    model_sigmas: Tensor | None = None,
    rho: float | None = None,
    beta_alpha: float = 0.6,
    beta_beta: float = 0.6,
) -> Tensor:
    """The n-step sigma list of `schedule` (A1111 v1.10.1 `sd_schedulers`), on the CPU, float32.

    "Automatic" here means the model's own spacing ("Uniform"); which schedule a *sampler* uses for
    "Automatic" is `sigmas_for`'s business. Schedules that read the model's discrete sigmas
    (Uniform, SGM Uniform, Simple, Normal, DDIM) need `model_sigmas` (ascending, as `model_sigmas()`).
    """
    s = find_schedule(schedule)
    if n < 1:
        raise SamplerError(f"steps must be at least 1, got {n}")
    ms = torch.empty(0)
    if s.name in _USES_MODEL_SIGMAS:
        if model_sigmas is None:
            raise SamplerError(f"schedule {s.label!r} needs the model's sigmas (model_sigmas=...)")
        ms = model_sigmas.detach().to("cpu", torch.float32)
    if s.name in ("automatic", "uniform"):
        return uniform_sigmas(n, ms)
    if s.name == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho or s.default_rho)
    if s.name == "exponential":
        return exponential_sigmas(n, sigma_min, sigma_max)
    if s.name == "polyexponential":
        return polyexponential_sigmas(n, sigma_min, sigma_max, rho or s.default_rho)
    if s.name == "sgm_uniform":
        return sgm_uniform_sigmas(n, sigma_min, sigma_max, ms)
    if s.name == "kl_optimal":
        return kl_optimal_sigmas(n, sigma_min, sigma_max)
    if s.name == "align_your_steps":
        return align_your_steps_sigmas(n)
    if s.name == "simple":
        return simple_sigmas(n, ms)
    if s.name == "normal":
        return normal_sigmas(n, sigma_min, sigma_max, ms)
    if s.name == "ddim":
        return ddim_sigmas(n, ms)
    return beta_sigmas(n, sigma_min, sigma_max, beta_alpha, beta_beta)

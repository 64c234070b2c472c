"""UniPC: unified predictor-corrector multistep solver (Zhao et al. 2023, "UniPC: A Unified
Predictor-Corrector Framework for Fast Sampling of Diffusion Models", Algorithms 2-3, B(h)
variants bh1/bh2, data prediction), as A1111 v1.10.1 runs it: DPM-Solver's discrete VP noise
schedule (log alpha piecewise linear in t = (n + 1)/N), multistep, order 3, lower order at the
end, no corrector on the last step, "time_uniform" spacing from t = 1 to 1/N.

Works in the model's VP scaling like `timesteps.py`: x is the raw initial noise and the result
is the latent at t = 1/N (what A1111 decodes). The model is called at the continuous timestep
(t - 1/N) N through the sigma-space denoiser at sigma = t_to_sigma(that timestep).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emaki.errors import SamplerError
from emaki.sampling.common import Denoiser, NoiseSampler, report
from emaki.sampling.progress import StepCallback
from emaki.sampling.schedules import t_to_sigma
from emaki.sampling.timesteps import eps_vp

Tensor = torch.Tensor


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear f(x) through (xp, fp), xp increasing, extended linearly past both ends."""
    k = torch.searchsorted(xp, x.reshape(-1)).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[k - 1], xp[k], fp[k - 1], fp[k]
    return (y0 + (x.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class DiscreteVPSchedule:
    """DPM-Solver's `NoiseScheduleVP('discrete')`: log alpha_t piecewise linear over t_n = (n+1)/N,
    alpha_t^2 = abar; sigma_t = sqrt(1 - alpha_t^2); lambda_t = log alpha_t - log sigma_t."""

    def __init__(self, model_sigmas: Tensor) -> None:
        ms = model_sigmas.detach().cpu()
        self.model_sigmas = ms.float()
        self.total_n = len(ms)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].double()
        self.log_alpha_array = -0.5 * torch.log1p(ms.double() ** 2)

    def log_alpha(self, t: Tensor) -> Tensor:
        return _interp(t, self.t_array, self.log_alpha_array)

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def std(self, t: Tensor) -> Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def inverse_lambda(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))

    def time_steps(self, skip_type: str, t_start: float, t_end: float, n: int) -> Tensor:
        """n + 1 times from t_start to t_end (DPM-Solver `get_time_steps`, float32 like it)."""
        if skip_type == "time_uniform":
            return torch.linspace(t_start, t_end, n + 1).double()
        if skip_type == "time_quadratic":
            return torch.linspace(t_start**0.5, t_end**0.5, n + 1).pow(2).double()
        if skip_type == "logSNR":
            lam_t = float(self.lam(torch.tensor(t_start, dtype=torch.float64)))
            lam_0 = float(self.lam(torch.tensor(t_end, dtype=torch.float64)))
            return self.inverse_lambda(torch.linspace(lam_t, lam_0, n + 1).double())
        raise SamplerError(
            f"UniPC skip_type {skip_type!r}; expected time_uniform, time_quadratic or logSNR"
        )


def _bh_update(
    data_pred: Callable[[Tensor, Tensor], Tensor],
    ns: DiscreteVPSchedule,
    x: Tensor,
    model_prev: list[Tensor],
    t_prev: list[Tensor],
    t: Tensor,
    order: int,
    variant: str,
    use_corrector: bool,
) -> tuple[Tensor, Tensor | None]:
    """One UniPC-p (predictor) + UniC (corrector) step of `order` for data prediction (B(h) form)."""
    lambda_prev_0, lambda_t = ns.lam(t_prev[-1]), ns.lam(t)
    model_prev_0 = model_prev[-1]
    sigma_prev_0, sigma_t, alpha_t = ns.std(t_prev[-1]), ns.std(t), ns.alpha(t)
    h = lambda_t - lambda_prev_0
    rks: list[float] = []
    d1s: list[Tensor] = []
    for i in range(1, order):
        rk = float((ns.lam(t_prev[-(i + 1)]) - lambda_prev_0) / h)
        rks.append(rk)
        d1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.0)
    rk_t = torch.tensor(rks, dtype=torch.float64)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(rk_t ** (i - 1))
        b.append(float(h_phi_k * factorial / b_h))
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_mat = torch.stack(rows)
    b_vec = torch.tensor(b, dtype=torch.float64)

    x_t_ = float(sigma_t / sigma_prev_0) * x - float(alpha_t * h_phi_1) * model_prev_0
    scale = float(alpha_t * b_h)
    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1]).tolist()
        x_t = x_t_ - scale * sum(float(r) * d for r, d in zip(rhos_p, d1s, strict=True))
    else:
        x_t = x_t_
    if not use_corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(r_mat, b_vec).tolist()
    model_t = data_pred(x_t, t)
    corr = sum((float(r) * d for r, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
    return x_t_ - scale * (corr + float(rhos_c[-1]) * (model_t - model_prev_0)), model_t


@torch.no_grad()
def sample_unipc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    order: int = 3,
    variant: str = "bh1",
    skip_type: str = "time_uniform",
    lower_order_final: bool = True,
    t_start: float | None = None,
) -> Tensor:
    """UniPC multistep with `steps` = number of positive sigmas (the values are not used: A1111
    integrates from t = 1, or `t_start` for img2img, to t = 1/N). Needs `denoiser.model_sigmas`.
    `order` is capped at `steps` (A1111 asserts instead)."""
    if variant not in ("bh1", "bh2"):
        raise SamplerError(f"UniPC variant {variant!r}; expected bh1 or bh2")
    model_sigmas = getattr(denoiser, "model_sigmas", None)
    if model_sigmas is None:
        raise SamplerError("UniPC needs the denoiser's discrete sigmas (denoiser.model_sigmas)")
    ns = DiscreteVPSchedule(model_sigmas)
    steps = int((sigmas > 0).sum())
    order = max(1, min(order, steps))

    def data_pred(x_t: Tensor, t: Tensor) -> Tensor:
        """x0 = (x - sigma_t eps) / alpha_t with eps from the model at timestep (t - 1/N) N."""
        t_input = (t - 1.0 / ns.total_n) * 1000.0
        sigma_in = t_to_sigma(t_input.float().reshape(1), ns.model_sigmas)[0].to(x_t.device)
        eps = eps_vp(denoiser, x_t, sigma_in)
        return (x_t - float(ns.std(t)) * eps) / float(ns.alpha(t))

    times = ns.time_steps(skip_type, 1.0 if t_start is None else t_start, 1.0 / ns.total_n, steps)
    model_prev = [data_pred(x, times[0])]
    t_prev = [times[0]]
    for init_order in range(1, order):
        t = times[init_order]
        x, model_x = _bh_update(data_pred, ns, x, model_prev, t_prev, t, init_order, variant, True)
        if model_x is None:
            model_x = data_pred(x, t)
        report(callback, init_order - 1, steps, ns.std(t) / ns.alpha(t), x, model_x)
        model_prev.append(model_x)
        t_prev.append(t)
    for step in range(order, steps + 1):
        t = times[step]
        step_order = min(order, steps + 1 - step) if lower_order_final else order
        x, model_x = _bh_update(
            data_pred, ns, x, model_prev, t_prev, t, step_order, variant, step != steps
        )
        report(
            callback,
            step - 1,
            steps,
            ns.std(t) / ns.alpha(t),
            x,
            model_prev[-1] if model_x is None else model_x,
        )
        if step < steps:  # no model evaluation after the last step
            model_prev = [*model_prev[1:], data_pred(x, t) if model_x is None else model_x]
            t_prev = [*t_prev[1:], t]
    return x

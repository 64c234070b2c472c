"""Linear multistep (LMS) sampler: Adams–Bashforth in sigma on the Karras ODE dx/dsigma = d
(Karras et al. 2022 use it as a baseline; k-diffusion `sample_lms`, default order 4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emaki.errors import SamplerError
from emaki.sampling.common import Denoiser, NoiseSampler, batch_sigma, report, to_d
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor

_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(8)


def lms_coefficient(order: int, t: Sequence[float] | np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial of node t_{i-j} on nodes
    t_i, ..., t_{i-order+1}. The integrand has degree order - 1, so 8-point Gauss–Legendre is exact
    (k-diffusion integrates the same polynomial numerically with `scipy.integrate.quad`)."""
    if order - 1 > i:
        raise SamplerError(f"LMS order {order} is too high for step {i} (at most {i + 1})")
    a, b = float(t[i]), float(t[i + 1])
    taus = (b - a) / 2 * _GAUSS_NODES + (a + b) / 2
    basis = np.ones_like(taus)
    for k in range(order):
        if k != j:
            basis *= (taus - t[i - k]) / (t[i - j] - t[i - k])
    return float((b - a) / 2 * np.dot(_GAUSS_WEIGHTS, basis))


@torch.no_grad()
def sample_lms(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    order: int = 4,
) -> Tensor:
    """x_{i+1} = x_i + sum_j c_ij d_{i-j}, order min(i + 1, `order`) (k-diffusion `sample_lms`)."""
    total = len(sigmas) - 1
    nodes = sigmas.detach().cpu().double().numpy()
    ds: list[Tensor] = []
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        cur = min(i + 1, order)
        coeffs = [lms_coefficient(cur, nodes, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
        report(callback, i, total, sigmas[i], x, denoised)
    return x

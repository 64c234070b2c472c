"""DPM-Solver++(2M), the multistep second-order data-prediction solver (Lu et al. 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Algorithm 2),
in k-diffusion's log-sigma form: t = -log sigma, h = t_next - t."""

from __future__ import annotations

import torch

from emaki.sampling.common import Denoiser, NoiseSampler, batch_sigma, report
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """x_next = (sigma_next / sigma) x - expm1(-h) D, with D = (1 + 1/2r) d_i - (1/2r) d_{i-1}, r = h_last / h.

    First-order (DPM-Solver++(1) = DDIM) on the first step and on the step to sigma = 0
    (Lu et al. 2022, Algorithm 2; k-diffusion `sample_dpmpp_2m`).
    """
    total = len(sigmas) - 1
    old_denoised: Tensor | None = None
    for i in range(total):
        denoised = denoiser(x, batch_sigma(x, sigmas[i]))
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            d = denoised
        else:
            r = (t + sigmas[i - 1].log()) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old_denoised = denoised
        report(callback, i, total, sigmas[i], x, denoised)
    return x

"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"):
Heun ODE steps, and at chosen points noise is added to jump back up to a higher sigma and the
interval is traversed again. Follows A1111's `restart_sampler` (`sd_samplers_extra.py`)."""

from __future__ import annotations

import itertools

import torch

from emaki.sampling.common import Denoiser, NoiseSampler, batch_sigma, report, require_noise, to_d
from emaki.sampling.progress import StepCallback
from emaki.sampling.schedules import karras_sigmas

Tensor = torch.Tensor
RestartList = dict[float, tuple[int, int, float]]
"""{sigma where a restart happens: (restart steps, restart times, sigma to jump back to)}."""


def restart_plan(
    sigmas: Tensor, restart_list: RestartList | None = None
) -> list[tuple[Tensor, Tensor]]:
    """The (sigma_from, sigma_to) pairs Restart walks, restarts included.

    With no `restart_list` and 20+ steps, A1111's defaults: the main schedule is rebuilt as Karras
    with steps - restart_steps * restart_times steps between sigmas[-2] and sigmas[0], and one
    restart segment {0.1: (restart_steps + 1, restart_times, 2)} with restart_steps = 9 and
    restart_times = 1 (or steps // 4 and 2 from 36 steps).
    """
    steps = sigmas.shape[0] - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
            sigmas = karras_sigmas(
                steps - restart_steps * restart_times, float(sigmas[-2]), float(sigmas[0])
            ).to(sigmas.device)
            restart_list = {0.1: (restart_steps + 1, restart_times, 2.0)}
    at_index = {
        int(torch.argmin((sigmas - key).abs(), dim=0)): v for key, v in restart_list.items()
    }
    plan: list[tuple[Tensor, Tensor]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at_index:
            restart_steps, restart_times, restart_max = at_index[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin((sigmas - restart_max).abs(), dim=0))
            if max_idx < min_idx:
                up = karras_sigmas(restart_steps, float(sigmas[min_idx]), float(sigmas[max_idx]))
                up = up.to(sigmas.device)[:-1]
                for _ in range(restart_times):
                    plan.extend(itertools.pairwise(up))
    return plan


@torch.no_grad()
def sample_restart(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise_sampler: NoiseSampler | None = None,
    callback: StepCallback | None = None,
    s_noise: float = 1.0,
    restart_list: RestartList | None = None,
) -> Tensor:
    """Heun steps along `restart_plan`; when the plan jumps up from sigma_a to sigma_b, add
    noise of size s_noise * sqrt(sigma_b^2 - sigma_a^2) (Xu et al. 2023, Algorithm 1)."""
    plan = restart_plan(sigmas, restart_list)
    last: Tensor | None = None
    for step, (old, new) in enumerate(plan):
        if last is None:
            last = old
        elif last < old:
            noise = require_noise(noise_sampler, "Restart")(last, old)
            x = x + noise * s_noise * (old**2 - last**2) ** 0.5
        denoised = denoiser(x, batch_sigma(x, old))
        d = to_d(x, old, denoised)
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = denoiser(x_2, batch_sigma(x_2, new))
            x = x + (d + to_d(x_2, new, denoised_2)) / 2 * dt
        last = new
        report(callback, step, len(plan), old, x, denoised)
    return x

"""From what a user typed ("DPM++ 2M Karras", "k_euler_a") to a sampler, a schedule and sigmas.

Follows A1111 v1.10.1 `sd_samplers.get_sampler_and_scheduler` (a schedule label at the end of
the sampler name wins over the separate scheduler field) and `KDiffusionSampler.get_sigmas`
("Automatic" → the sampler's default schedule; DPM2-family discard the penultimate sigma).
"""

from __future__ import annotations

import torch

from emaki.errors import SamplerError
from emaki.sampling.lcm import lcm_model_sigmas
from emaki.sampling.registry import Sampler, get_sampler, samplers
from emaki.sampling.schedules import SCHEDULES, find_schedule, get_sigmas

Tensor = torch.Tensor

_ALIAS_SUFFIXES = {"_ka": "Karras", "_exp": "Exponential"}
"""Old alias suffixes: `k_dpmpp_2m_ka` = "DPM++ 2M Karras" (A1111 2022 aliases)."""


def parse_sampler_name(name: str, scheduler: str | None = None) -> tuple[str, str]:
    """Canonical (sampler name, schedule label) for a sampler name and optional scheduler.

    >>> parse_sampler_name("DPM++ 2M Karras")
    ('DPM++ 2M', 'Karras')
    >>> parse_sampler_name("Euler a", "automatic")
    ('Euler a', 'Automatic')
    >>> parse_sampler_name("k_dpmpp_2m_ka")
    ('DPM++ 2M', 'Karras')
    """
    schedule = find_schedule(scheduler).label if scheduler else "Automatic"
    text = name.strip()
    lowered = text.lower()
    known = {key.lower() for s in samplers() for key in (s.name, *s.aliases)}
    if lowered not in known:
        for s in SCHEDULES[1:]:
            for label in (s.label, *s.aliases):
                if lowered.endswith(" " + label.lower()):
                    text, schedule = text[: -len(label) - 1].strip(), s.label
                    break
            else:
                continue
            break
        else:
            for suffix, label in _ALIAS_SUFFIXES.items():
                if lowered.endswith(suffix) and lowered[: -len(suffix)] in known:
                    text, schedule = text[: -len(suffix)], label
                    break
    try:
        return get_sampler(text).name, schedule
    except SamplerError:
        valid = ", ".join(s.name for s in samplers())
        raise SamplerError(
            f"unknown sampler {name!r}; expected one of: {valid} "
            f"(optionally followed by a schedule: {', '.join(s.label for s in SCHEDULES[1:])})"
        ) from None


def resolve_schedule(sampler: Sampler, schedule: str) -> str:
    """The schedule label actually used: "Automatic" becomes the sampler's default."""
    label = find_schedule(schedule).label
    return sampler.default_schedule if label == "Automatic" else label


def sigmas_for(
    sampler: Sampler | str,
    schedule: str,
    steps: int,
    model_sigmas: Tensor,
    *,
    discard_penultimate_sigma: bool = False,
    rho: float | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """The sigmas A1111 v1.10.1 hands the sampler for `steps` steps (`KDiffusionSampler.get_sigmas`).

    `model_sigmas` is the model's ascending discrete sigmas. DPM2-family samplers (and any sampler
    when `discard_penultimate_sigma`, A1111's "always discard" option) get one extra step whose
    next-to-last sigma is then dropped. Timestep samplers (DDIM, PLMS, UniPC) ignore the schedule
    and use A1111's timesteps `range(0, 1000, 1000 // steps) + 1`, returned as their sigmas
    (descending, no final 0: A1111 stops at timestep 1). LCM builds every schedule on LCM's 50
    timesteps (`lcm_model_sigmas`), like A1111's LCM denoiser.
    """
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if steps < 1:
        raise SamplerError(f"steps must be at least 1, got {steps}")
    ms = model_sigmas.detach().to("cpu", torch.float32)
    if sampler.lcm:
        ms = lcm_model_sigmas(ms)
    discard = sampler.discard_penultimate_sigma or discard_penultimate_sigma
    n = steps + 1 if discard else steps
    if sampler.timesteps:
        return timestep_sigmas(n, ms)  # A1111 adds the step but has no sigma to drop here
    else:
        sigmas = get_sigmas(
            resolve_schedule(sampler, schedule),
            n,
            sigma_min=float(ms[0]) if sigma_min is None else sigma_min,
            sigma_max=float(ms[-1]) if sigma_max is None else sigma_max,
            model_sigmas=ms,
            rho=rho,
        )
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def timestep_sigmas(steps: int, model_sigmas: Tensor) -> Tensor:
    """Sigmas of A1111's timestep-sampler schedule t = clip(range(0, 1000, 1000 // steps) + 1, 0, 999),
    descending (`sd_samplers_timesteps.CompVisSampler.get_timesteps`)."""
    last = len(model_sigmas) - 1
    ts = [min(t + 1, last) for t in range(0, len(model_sigmas), max(len(model_sigmas) // steps, 1))]
    return model_sigmas[ts].flip(0)


def infotext_schedule_type(sampler: Sampler | str, schedule: str) -> str | None:
    """The "Schedule type" A1111 v1.10.1 writes into infotext, or None when it writes none.

    k-diffusion samplers write the schedule they used unless "Automatic" fell back to the model's
    own spacing (no default schedule); DPM++ 2M with "Automatic" writes "Karras". Timestep
    samplers never write one.
    """
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if sampler.timesteps:
        return None
    label = find_schedule(schedule).label
    if label == "Automatic" and sampler.default_schedule in ("Uniform", "Automatic"):
        return None
    return resolve_schedule(sampler, label)


def img2img_sigmas(sampler: Sampler | str, sigmas: Tensor, steps: int, strength: float,
                   t_enc: int | None = None) -> tuple[Tensor, Tensor]:
    """(noise level of the starting latent, sigmas to sample) for img2img, as A1111 v1.10.1 with
    `img2img_fix_steps` off: `t_enc = int(min(strength, 0.999) * steps)` of the `steps`-step
    schedule are run. k-diffusion samplers run `sigmas[steps - t_enc - 1:]` from its first
    sigma; timestep samplers (DDIM, PLMS, UniPC) noise to timestep `t_enc` and run the `t_enc`
    timesteps below it (`sd_samplers_timesteps.sample_img2img`), at least one. A given `t_enc`
    overrides the arithmetic (the hires pass fixes it, see `emaki.engine.hires.hires_steps`).
    """
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if t_enc is None:
        t_enc = int(min(strength, 0.999) * steps)
    if sampler.timesteps:
        t_enc = max(t_enc, 1)
        n = len(sigmas)
        return sigmas[n - 1 - t_enc], sigmas[n - t_enc:]
    schedule = sigmas[steps - t_enc - 1:]
    return schedule[0], schedule

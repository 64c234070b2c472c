"""Samplers by their A1111 v1.10.1 names, with the metadata the engine and the API need.

Names and per-sampler options follow A1111 `sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`
and `sd_samplers_lcm.py` (specs/FORMATS.md §9): `second_order` (prompt-editing steps count twice,
specs §4.3), `uses_ensd` (infotext records ENSD), `discard_penultimate_sigma` (DPM2 family),
`default_schedule` (what "Automatic" means), `brownian_noise` (A1111 feeds a Brownian tree).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from emaki.errors import SamplerError
from emaki.sampling.common import Denoiser, NoiseSampler
from emaki.sampling.progress import StepCallback

Tensor = torch.Tensor
SamplerFunction = Callable[..., Tensor]

GLOBAL_OPTIONS = frozenset({"eta", "s_noise", "s_churn", "s_tmin", "s_tmax"})
"""A1111's global sampler settings. A1111 forwards `eta` to every sampler that has the parameter
and s_churn/s_tmin/s_tmax/s_noise only per its `sampler_extra_params` table (`a1111_settings`);
`Sampler.__call__` does the same and drops the rest, so the engine can pass them all. (Call
`sampler.function` directly to use an option A1111 does not forward.) Any other unknown option
is an error."""


@dataclass(frozen=True, eq=False)
class Sampler:
    """One named sampler: call it as `sampler(denoiser, x, sigmas, *, noise_sampler, callback, **options)`."""

    name: str
    function: SamplerFunction = field(repr=False)
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Options A1111 fixes for this name (e.g. `solver_type="heun"`); call options override them."""
    second_order: bool = False
    """Two model calls per step: prompt-editing timelines count 2 x steps (specs §4.3)."""
    uses_ensd: bool = False
    """Infotext records ENSD for this sampler (when eta != 0)."""
    discard_penultimate_sigma: bool = False
    default_schedule: str = "Uniform"
    """What "Automatic" means for this sampler."""
    brownian_noise: bool = False
    """A1111 feeds this sampler a Brownian-tree noise sampler (`brownian_noise_sampler`)."""
    timesteps: bool = False
    """Runs on the model's discrete timesteps in VP scaling (DDIM, PLMS, UniPC); see `initial_latent`."""
    lcm: bool = False
    """Schedules are built on LCM's 50 timesteps (`lcm_model_sigmas`); the denoiser needs LCM's boundary."""
    a1111_settings: tuple[str, ...] = ()
    """Which of s_churn, s_tmin, s_tmax, s_noise A1111 forwards to this sampler."""

    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise_sampler: NoiseSampler | None = None,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> Tensor:
        names = self.option_names
        forwarded = {*self.a1111_settings, *({"eta"} & set(names))}
        options = {k: v for k, v in options.items() if k not in GLOBAL_OPTIONS or k in forwarded}
        unknown = set(options) - set(names)
        if unknown:
            raise SamplerError(
                f"sampler {self.name!r} has no option {', '.join(sorted(unknown))}; "
                f"expected: {', '.join(self.option_names) or 'none'}"
            )
        return self.function(
            denoiser,
            x,
            sigmas,
            noise_sampler=noise_sampler,
            callback=callback,
            **{**self.defaults, **options},
        )

    @property
    def option_names(self) -> tuple[str, ...]:
        """Keyword options the sampler takes, with k-diffusion's names (eta, s_noise, s_churn, ...)."""
        params = inspect.signature(self.function).parameters
        skip = {"denoiser", "x", "sigmas", "noise_sampler", "callback"}
        return tuple(p for p in params if p not in skip)

    @property
    def options(self) -> dict[str, Any]:
        """A1111's option dict for this sampler, as `/sdapi/v1/samplers` shows it."""
        out: dict[str, Any] = {}
        if self.default_schedule not in ("Uniform", "Automatic"):
            out["scheduler"] = self.default_schedule.lower()
        if self.second_order:
            out["second_order"] = True
        if self.brownian_noise:
            out["brownian_noise"] = True
        if self.uses_ensd:
            out["uses_ensd"] = True
        if self.discard_penultimate_sigma:
            out["discard_next_to_last_sigma"] = True
        out.update({k: v for k, v in self.defaults.items() if k == "solver_type"})
        return out

    def initial_latent(
        self, noise: Tensor, sigma: Tensor | float, init: Tensor | None = None
    ) -> Tensor:
        """The sampler's starting x for initial `noise` at noise level `sigma` (= sigmas[0]).

        k-diffusion samplers: noise * sigma, or init + noise * sigma for img2img. Timestep samplers
        work in VP scaling: A1111 passes the noise itself for txt2img, and
        sqrt(abar) init + sqrt(1 - abar) noise with abar = 1 / (1 + sigma^2) for img2img.
        """
        s = torch.as_tensor(sigma, dtype=torch.float64)
        if not self.timesteps:
            return noise * float(s) if init is None else init + noise * float(s)
        if init is None:
            return noise
        abar = 1.0 / (1.0 + s**2)
        return init * float(abar.sqrt()) + noise * float((1 - abar).sqrt())


_SAMPLERS: list[Sampler] = []


def register(sampler: Sampler) -> Sampler:
    """Add `sampler` to `SAMPLERS` (A1111's order is the registration order)."""
    _SAMPLERS.append(sampler)
    return sampler


def samplers() -> tuple[Sampler, ...]:
    return tuple(_SAMPLERS)


def _lookup() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for s in _SAMPLERS:
        for key in (s.name, *s.aliases):
            table.setdefault(key.lower(), s)
    return table


def get_sampler(name: str) -> Sampler:
    """The sampler called `name` (A1111 name or alias, any case; a schedule suffix is not accepted here)."""
    found = _lookup().get(name.strip().lower())
    if found is None:
        valid = ", ".join(s.name for s in _SAMPLERS)
        raise SamplerError(f"unknown sampler {name!r}; expected one of: {valid}")
    return found

"""A1111's Negative Guidance minimum sigma (NGMS, `s_min_uncond`), and finding the CFG denoiser a
speed feature adds its rules to.

Below `s_min_uncond` the unconditional (negative prompt) pass is left out of every other
denoiser call — of every call with `s_min_uncond_all` — as in A1111 v1.10's CFG denoiser:

    skip = (call % 2 == 1 or all_steps) and sigma[0] < s_min_uncond

A skipped call runs the conditional pass only (`CFGDenoiser`'s `skip_uncond`), so it costs
half the UNet work of a CFG call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emaki.engine.run import Extension, Run
from emaki.sampling.denoiser import CFGDenoiser


def guidance_of(denoiser: Callable[..., torch.Tensor]) -> CFGDenoiser:
    """The `CFGDenoiser` a run's denoiser is built on: `denoiser` itself, or the one that the
    wrappers of earlier extensions (inpainting's `KeptLatents`, ...) hold as `.denoiser`."""
    found: object = denoiser
    while not isinstance(found, CFGDenoiser):
        inner = vars(found).get("denoiser") if hasattr(found, "__dict__") else None
        if inner is None:
            raise TypeError(f"{type(denoiser).__name__} wraps no CFGDenoiser (as `.denoiser`)")
        found = inner
    return found


class NegativeGuidanceMinimumSigma(Extension):
    """`--ngms SIGMA`: skip the negative prompt below SIGMA (every other call, or every call)."""

    def __init__(self, sigma: float, all_steps: bool = False) -> None:
        self.sigma = sigma
        self.all_steps = all_steps
        self.skipped = 0  # calls that skipped, over the run: the infotext records NGMS once one did

    def wrap_denoiser(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        guidance_of(denoiser).skip_uncond.append(self.skips)
        return denoiser

    def skips(self, call: int, sigma: torch.Tensor) -> bool:
        skip = (call % 2 == 1 or self.all_steps) and float(sigma[0]) < self.sigma
        self.skipped += skip
        return skip

    def infotext_fields(self, run: Run) -> dict[str, object]:
        if not self.skipped:
            return {}
        return {"NGMS": self.sigma, **({"NGMS all steps": True} if self.all_steps else {})}

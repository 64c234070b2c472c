"""The UNet as a k-diffusion denoiser, and classifier-free guidance over it.

`DiscreteEpsDenoiser` is k-diffusion's `CompVisDenoiser`: a UNet trained to predict the noise
eps at 1000 discrete timesteps becomes `f(x, sigma) -> x0`:

    t = sigma_to_t(sigma)                 (log-sigma interpolation into the discrete table)
    eps = unet(x / sqrt(sigma² + 1), t, cond)
    x0 = x - sigma · eps

An inpainting model (9-channel UNet) also takes `image_conditioning(x)` — the mask and the
masked image's latents (A1111's `c_concat`) — concatenated to its scaled input.

`CFGDenoiser` batches the conditional and unconditional passes and combines them as
composable diffusion (specs/FORMATS.md §4.4): x0 = u + Σ_i w_i · cfg · (c_i − u).
A step whose `skip_uncond` rule holds (A1111's NGMS, T-GATE) runs the conditional pass only and,
as A1111 does, takes each image's first part for u with a scale of 1: x0 = c_1 + Σ_i w_i · (c_i − c_1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from emaki.sampling.lcm import lcm_boundary, lcm_timestep
from emaki.sampling.schedules import model_sigmas, sigma_to_t

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ImageConditioning = Callable[[torch.Tensor], torch.Tensor]  # latents (n, c, h, w) → extra channels (n, k, h, w)
SkipUncond = Callable[[int, torch.Tensor], bool]  # (denoiser call, sigma) → leave the negative prompt out


class DiscreteEpsDenoiser:
    """k-diffusion `CompVisDenoiser` over an eps-predicting model `eps_model(x, t, context)`."""

    def __init__(self, eps_model: EpsModel, alphas_cumprod: torch.Tensor, *, lcm: bool = False) -> None:
        self.eps_model = eps_model
        self.lcm = lcm  # A1111's LCMCompVisDenoiser: LCM timesteps and the consistency boundary
        self.model_sigmas = model_sigmas(alphas_cumprod).float()
        self.image_conditioning: ImageConditioning | None = None  # set per run for inpainting models

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma_b = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / (sigma_b**2 + 1) ** 0.5
        if self.lcm:
            t = lcm_timestep(sigma, self.model_sigmas)
        else:
            t = sigma_to_t(sigma.float(), self.model_sigmas)
        x_in = x * c_in
        if self.image_conditioning is not None:  # unscaled, as LDM's hybrid conditioning concatenates it
            x_in = torch.cat([x_in, self.image_conditioning(x).to(x_in)], dim=1)
        eps = self.eps_model(x_in, t.to(sigma.dtype), context)
        denoised = x - eps.to(x.dtype) * sigma_b
        return lcm_boundary(x, denoised, sigma, self.model_sigmas) if self.lcm else denoised


class Conditioning(Protocol):
    def at(self, step: int) -> torch.Tensor: ...


class ComposableParts(Protocol):
    parts: Sequence[tuple[Conditioning, float]]


def stack_conds(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack `(tokens, dim)` conditionings of different lengths into `(n, max_tokens, dim)`.

    Shorter ones are padded by repeating their last vector (specs §4.4, A1111 `stack_conds`).

    >>> stack_conds([torch.ones(77, 2), torch.arange(308.).reshape(154, 2)]).shape
    torch.Size([2, 154, 2])
    """
    longest = max(t.shape[0] for t in tensors)
    padded = [
        t if t.shape[0] == longest else torch.cat([t, t[-1:].expand(longest - t.shape[0], -1)])
        for t in tensors
    ]
    return torch.stack(padded)


class CFGDenoiser:
    """Classifier-free guidance with AND parts and scheduled prompts, as A1111's `CFGDenoiser`.

    `step` counts denoiser calls (0-based); scheduled conditionings switch on it. Extensions add
    `skip_uncond` rules; `owners` is the image of each conditional row (after the first call).
    """

    def __init__(self, denoiser: DiscreteEpsDenoiser, conds: Sequence[ComposableParts],
                 unconds: Sequence[Conditioning], cfg_scale: float) -> None:
        self.denoiser = denoiser
        self.model_sigmas = denoiser.model_sigmas
        self.conds = conds
        self.unconds = unconds
        self.cfg_scale = cfg_scale
        self.step = 0
        self.skip_uncond: list[SkipUncond] = []
        self.skipped_uncond = 0  # calls that left the negative prompt out
        self.owners: list[int] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        cond_tensors: list[torch.Tensor] = []
        owners: list[int] = []
        weights: list[float] = []
        for i, prompt in enumerate(self.conds):
            for part, weight in prompt.parts:
                cond_tensors.append(part.at(self.step))
                owners.append(i)
                weights.append(weight)
        self.owners = owners
        cond = stack_conds(cond_tensors)
        x_cond, sigma_cond = x[owners], sigma[owners]
        skips = [rule(self.step, sigma) for rule in self.skip_uncond]  # each rule hears of every call
        if any(skips):
            return self._conditional_only(x_cond, sigma_cond, cond, owners, weights, batch)
        uncond = stack_conds([u.at(self.step) for u in self.unconds])
        if cond.shape[1] == uncond.shape[1]:
            out = self.denoiser(torch.cat([x_cond, x]), torch.cat([sigma_cond, sigma]),
                                torch.cat([cond, uncond]).to(x.device))
            cond_out, uncond_out = out[: len(owners)], out[len(owners) :]
        else:  # different chunk counts: two passes, as A1111 without pad_cond_uncond
            cond_out = self.denoiser(x_cond, sigma_cond, cond.to(x.device))
            uncond_out = self.denoiser(x, sigma, uncond.to(x.device))
        denoised = uncond_out.clone()
        for row, (owner, weight) in enumerate(zip(owners, weights, strict=True)):
            denoised[owner] += (cond_out[row] - uncond_out[owner]) * (weight * self.cfg_scale)
        self.step += 1
        assert denoised.shape[0] == batch
        return denoised

    def _conditional_only(self, x_cond: torch.Tensor, sigma_cond: torch.Tensor, cond: torch.Tensor,
                          owners: list[int], weights: list[float], batch: int) -> torch.Tensor:
        """The conditional pass alone: each image's first part stands in for its unconditional
        prediction, at scale 1 (A1111's `skip_uncond`)."""
        cond_out = self.denoiser(x_cond, sigma_cond, cond.to(x_cond.device))
        firsts = [owners.index(i) for i in range(batch)]
        denoised = cond_out[firsts].clone()
        for row, (owner, weight) in enumerate(zip(owners, weights, strict=True)):
            denoised[owner] += (cond_out[row] - cond_out[firsts[owner]]) * weight
        self.skipped_uncond += 1
        self.step += 1
        return denoised

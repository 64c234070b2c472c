"""The denoising objective every network is trained on: LDM's `p_losses` with the simple loss.

For latents x₀ and noise ε at a uniformly drawn timestep t: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε; the
UNet's output is compared (mean squared error) with ε, or with v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ for a
v-prediction model. A per-element weight (A1111's alpha-channel weighting) multiplies the squared
error before the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Prediction = Literal["epsilon", "v_prediction"]


@dataclass
class DiffusionObjective:
    unet: nn.Module
    alphas_cumprod: torch.Tensor  # [T], the model's training schedule
    prediction: Prediction = "epsilon"

    def loss(self, latents: torch.Tensor, context: torch.Tensor, weight: torch.Tensor | None,
             generator: torch.Generator) -> torch.Tensor:
        """The mean loss of one batch; noise and timesteps come from `generator` (on the CPU, so
        a seeded run draws the same numbers on any device)."""
        batch = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, self.alphas_cumprod.shape[0], (batch,), generator=generator)
        alpha = self.alphas_cumprod[timesteps].float().view(batch, 1, 1, 1)
        latents = latents.float().cpu()
        noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
        target = noise if self.prediction == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
        parameter = next(self.unet.parameters())
        output = self.unet(noisy.to(device=parameter.device, dtype=parameter.dtype),
                           timesteps.to(parameter.device),
                           encoder_hidden_states=context.to(device=parameter.device, dtype=parameter.dtype)).sample
        error = (output.float() - target.to(output.device)) ** 2
        if weight is not None:
            error = error * weight.to(error.device)
        return error.mean()

"""The denoising objective every network is trained on: LDM's `p_losses` with the simple loss.

For latents x₀ and noise ε at a uniformly drawn timestep t: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε; the
UNet's output is compared (mean squared error) with ε, or with v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀ for a
v-prediction model. A per-element weight (A1111's alpha-channel weighting) multiplies the squared
error before the mean. kohya's options for LoRA: `noise_offset` adds `offset · N(0, 1)` per image
and channel to the noise (darker darks, brighter brights), and `min_snr_gamma` weighs each image's
loss by min(SNR_t, γ)/SNR_t (÷ (SNR_t + 1) for v-prediction; Hang et al. 2023).
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
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None

    def loss(self, latents: torch.Tensor, context: torch.Tensor, weight: torch.Tensor | None,
             generator: torch.Generator) -> torch.Tensor:
        """The mean loss of one batch; noise and timesteps come from `generator` (on the CPU, so
        a seeded run draws the same numbers on any device)."""
        batch = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, self.alphas_cumprod.shape[0], (batch,), generator=generator)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn(batch, latents.shape[1], 1, 1, generator=generator)
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
        if self.min_snr_gamma is None:
            return error.mean()
        snr = (alpha / (1 - alpha)).view(batch).to(error.device)
        clipped = torch.clamp(snr, max=self.min_snr_gamma)
        factor = clipped / snr if self.prediction == "epsilon" else clipped / (snr + 1)
        return (error.mean(dim=(1, 2, 3)) * factor).mean()

"""The loaded parts of one SD 1.x model, and building them from a config with random weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from emaki.models.configs import ModelConfig
from emaki.models.tokenizer import load_clip_tokenizer


@dataclass
class SDComponents:
    """UNet + VAE + text encoder + tokenizer, with the noise schedule they were trained on."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    config: ModelConfig
    alphas_cumprod: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __post_init__(self) -> None:
        if self.alphas_cumprod.numel() == 0:
            self.alphas_cumprod = sd_alphas_cumprod(self.config)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SDComponents:
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype)
        return self


def sd_alphas_cumprod(config: ModelConfig) -> torch.Tensor:
    """cumprod(1 - beta) for the scaled-linear schedule of v1-inference.yaml, in float64."""
    sched = config.schedule
    n = int(sched["num_train_timesteps"])
    betas = torch.linspace(sched["beta_start"] ** 0.5, sched["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def build_random_components(config: ModelConfig, seed: int = 0) -> SDComponents:
    """Components of `config`'s sizes with random weights from `seed` (tests, benchmarks)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config.unet)
    vae = AutoencoderKL(**config.vae)
    text_encoder = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    for module in (unet, vae, text_encoder):
        _randomize_norms(module)
        module.eval().requires_grad_(False)
    return SDComponents(unet, vae, text_encoder, load_clip_tokenizer(), config)


@torch.no_grad()
def _randomize_norms(module: torch.nn.Module) -> None:
    """Give norm layers trained-looking affine parameters instead of exactly 1 and 0.

    With zero biases the final LayerNorm makes CLIP's output mean exactly 0, and A1111's
    emphasis mean-restore (mean(z)/mean(z·w)) turns into 0/0: a fresh model would not
    exercise what a trained one does.
    """
    for norm in module.modules():
        if isinstance(norm, torch.nn.LayerNorm | torch.nn.GroupNorm) and norm.weight is not None:
            norm.weight.add_(0.1 * torch.randn_like(norm.weight))
            norm.bias.add_(0.1 * torch.randn_like(norm.bias))

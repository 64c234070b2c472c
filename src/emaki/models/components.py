"""The loaded parts of one SD 1.x model, and building them from a config with random weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from emaki.models.configs import ModelConfig
from emaki.models.tokenizer import load_clip_tokenizer
from emaki.sampling.schedules import sd1_alphas_cumprod


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
        modules: tuple[torch.nn.Module, ...] = (self.unet, self.vae, self.text_encoder)
        for module in modules:
            module.to(device=device, dtype=dtype)
        return self


def sd_alphas_cumprod(config: ModelConfig) -> torch.Tensor:
    """`config`'s training schedule (`sd1_alphas_cumprod` of its `schedule`), in float64."""
    schedule = config.schedule
    return sd1_alphas_cumprod(
        int(schedule["num_train_timesteps"]),
        schedule["beta_start"],
        schedule["beta_end"],
        dtype=torch.float64,
    )


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

"""Architecture configs of SD 1.x models: the real SD 1.5 sizes and a tiny variant for tests.

A `ModelConfig` holds the three component configs in the keyword form that
`UNet2DConditionModel`, `AutoencoderKL` and `transformers.CLIPTextConfig` take, so a model can
be built from it without any file or download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

# SD 1.x noise schedule (v1-inference.yaml): scaled-linear betas over 1000 steps.
SD1_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


@dataclass(frozen=True)
class ModelConfig:
    """The sizes of the UNet, VAE and CLIP text encoder of one SD 1.x-architecture model."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    schedule: dict[str, Any] = field(default_factory=lambda: dict(SD1_SCHEDULE))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.get("latent_channels", 4))

    @property
    def is_inpainting(self) -> bool:
        """An inpainting checkpoint (SD 1.5-inpainting): the UNet also takes the mask (1 channel)
        and the masked image's latents, concatenated to its input (4 + 1 + 4 = 9 channels)."""
        return int(self.unet.get("in_channels", 4)) == 2 * self.latent_channels + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            unet=dict(data["unet"]),
            vae=dict(data["vae"]),
            text_encoder=dict(data["text_encoder"]),
            schedule=dict(data.get("schedule", SD1_SCHEDULE)),
        )


def _text_encoder(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, Any]:
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def sd15_config() -> ModelConfig:
    """The SD 1.5 sizes: 860M-parameter UNet, CLIP ViT-L/14 text encoder, 8x VAE."""
    return ModelConfig(
        unet={
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 512,
            "scaling_factor": 0.18215,
        },
        text_encoder=_text_encoder(hidden=768, layers=12, heads=12, intermediate=3072),
    )


def as_inpainting(config: ModelConfig) -> ModelConfig:
    """The same sizes with a 9-channel UNet input: an inpainting model's architecture."""
    return replace(config, unet={**config.unet, "in_channels": 2 * config.latent_channels + 1})


def tiny_config() -> ModelConfig:
    """A model of SD 1.x shape small enough for tests (about 3M parameters, 2x VAE)."""
    return ModelConfig(
        unet={
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 32,
            "scaling_factor": 0.18215,
        },
        # One head: what shape inference assumes (CLIP's heads are 64 wide), so files
        # without emaki's metadata (e.g. .ckpt fixtures) load back with the same sizes.
        text_encoder=_text_encoder(hidden=32, layers=3, heads=1, intermediate=64),
    )

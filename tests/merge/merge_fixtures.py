"""Checkpoints in the real SD 1.x single-file layout (every key of every block), scaled down.

The key → shape table comes from a shape-only (meta) model of SD 1.5's structure with narrow
channels, converted to the LDM layout by `emaki.models.convert`; the values are random, drawn
per file from its own seed, so each file is a distinct "model".
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors.torch import save_file

from emaki.models.configs import ModelConfig, sd15_config, tiny_config

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def mini_sd15_config(cross_attention_dim: int = 32) -> ModelConfig:
    """SD 1.5's block structure (4 levels x 2 layers: IN00-IN11, M00, OUT00-OUT11), narrow."""
    sd15 = sd15_config()
    return ModelConfig(
        unet=sd15.unet | {"sample_size": 8, "block_out_channels": [32, 32, 64, 64],
                          "cross_attention_dim": cross_attention_dim},
        vae=sd15.vae | {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 32},
        text_encoder={
            **tiny_config().text_encoder,  # 32 wide, one head
            "num_hidden_layers": 2,
            "vocab_size": 1000,
            "bos_token_id": 998,
            "eos_token_id": 999,
            "pad_token_id": 1,
        },
    )


@functools.cache
def layout(cross_attention_dim: int = 32, in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    """{LDM key: shape} of the mini SD 1.5 (plus position ids and schedule buffers)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emaki.models.convert import components_to_ldm

    config = mini_sd15_config(cross_attention_dim)
    with init_empty_weights():
        unet = UNet2DConditionModel(**{**config.unet, "in_channels": in_channels})
        vae = AutoencoderKL(**config.vae)
        text = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    shapes = {
        k: tuple(v.shape)
        for k, v in components_to_ldm(unet, vae, text, config.unet, config.vae).items()
    }
    shapes[POSITION_IDS] = (1, 77)
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev"):
        shapes[name] = (1000,)
    return shapes


def random_state(
    seed: int,
    dtype: torch.dtype = torch.float16,
    *,
    ema: bool = False,
    in_channels: int = 4,
    cross_attention_dim: int = 32,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout(cross_attention_dim, in_channels).items():
        if key == POSITION_IDS:
            state[key] = torch.arange(77, dtype=torch.int64)[None]
        elif "model" not in key:  # schedule buffers: the same in every file, fp32
            state[key] = torch.linspace(0.999, 0.01, 1000, dtype=torch.float32)
        else:
            state[key] = torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)
    if ema:
        for key in [k for k in state if k.startswith("model.diffusion_model.")]:
            state["model_ema." + "".join(key.split(".")[1:])] = torch.randn(
                state[key].shape, generator=g
            ).to(dtype)
        state["model_ema.decay"] = torch.tensor(0.9999)
        state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int64)
    return state


def write_random_models(folder: Path, names: str = "abc") -> Path:
    """`<name>.safetensors` for each letter of `names`, `random_state(1)`, `(2)`, ... in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names, start=1):
        save_file({k: v.contiguous() for k, v in random_state(seed).items()}, str(folder / f"{name}.safetensors"),
                  metadata={"format": "pt"})
    return folder

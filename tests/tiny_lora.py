"""Tiny LoRA files for the demo model (kohya names, a few modules of the right shapes), written
by the tests that need one on disk: listings, infotexts, the web page's picker."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

EMBEDDING_WIDTH = 128  # the demo model's text encoder


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_lora_tensors(*, seed: int = 0, scale: float = 0.6, rank: int = 2) -> dict[str, torch.Tensor]:
    """LoRA pairs on a text-encoder MLP, a UNet 1x1 convolution and a cross-attention key."""
    shapes = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1": ((512, rank), (rank, 128)),
        "lora_unet_down_blocks_0_attentions_0_proj_in": ((32, rank, 1, 1), (rank, 32, 1, 1)),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k": ((128, rank), (rank, 128)),
    }
    tensors = {}
    for i, (name, (up, down)) in enumerate(shapes.items()):
        tensors[f"{name}.lora_up.weight"] = scale * _rand(*up, seed=seed + 2 * i)
        tensors[f"{name}.lora_down.weight"] = scale * _rand(*down, seed=seed + 2 * i + 1)
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    return tensors


def write_tiny_lora(path: Path, *, seed: int = 0, alias: str | None = None, tags: dict[str, int] | None = None,
                    embeddings: dict[str, torch.Tensor] | None = None) -> Path:
    """A kohya-style `.safetensors` LoRA: `alias` as `ss_output_name`, `tags` as its training tag
    counts (`ss_tag_frequency`), `embeddings` bundled as `bundle_emb.NAME.string_to_param.*`."""
    tensors = tiny_lora_tensors(seed=seed)
    for name, vectors in (embeddings or {}).items():
        tensors[f"bundle_emb.{name}.string_to_param.*"] = vectors
    metadata = {"ss_base_model_version": "sd_v1", "ss_network_dim": "2", "ss_network_alpha": "2"}
    if alias:
        metadata["ss_output_name"] = alias
    if tags:
        metadata["ss_tag_frequency"] = json.dumps({"10_subject": tags})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path

"""Single-file SD 1.x checkpoints: read (any user file), normalise, infer sizes, write.

Users' files come in many shapes (specs/FORMATS.md §7.2): with or without the `state_dict`
wrapper, old text-encoder key names without `text_model.`, EMA copies, fp16/fp32/bf16. They are
normalised here into one flat LDM-layout dict. The architecture sizes are read from the tensor
shapes (SD 1.x conventions fill in what shapes cannot tell, e.g. 8 attention heads), unless the
file carries emaki's own `emaki_config` metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from emaki.errors import ModelLoadError
from emaki.files import atomic_write
from emaki.models.configs import SD1_SCHEDULE, ModelConfig
from emaki.models.convert import (
    CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    components_to_ldm,
    normalize_ldm_key,
    unwrap_state_dict,
)
from emaki.models.safe_load import load_tensors

CONFIG_METADATA_KEY = "emaki_config"


def normalize_state_dict(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap `state_dict`, rename old text-encoder keys, keep tensors only."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unwrap_state_dict(data).items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        out[normalize_ldm_key(key)] = value
    return out


def read_checkpoint(path: str | Path, dtype_of: Callable[[str], torch.dtype | None] | None = None,
                    ) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """The normalised LDM state dict of a single-file checkpoint and its architecture; `dtype_of`
    casts a safetensors file's tensors as they are read (`load_tensors`)."""
    path = Path(path)
    data, metadata = load_tensors(path, dtype_of)
    state = normalize_state_dict(data)
    if not any(k.startswith(UNET_PREFIX) for k in state):
        raise ModelLoadError(
            f"{path}: not an SD 1.x checkpoint (no 'model.diffusion_model.' UNet weights; "
            f"{len(state)} tensors found)"
        )
    for prefix, part in ((CLIP_PREFIX, "text encoder"), (VAE_PREFIX, "VAE")):
        if not any(k.startswith(prefix) for k in state):
            raise ModelLoadError(f"{path}: the checkpoint has no {part} weights ('{prefix}*')")
    inferred = infer_config(state, path)
    if CONFIG_METADATA_KEY not in metadata:
        return state, inferred
    try:
        config = ModelConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelLoadError(f"{path}: unreadable '{CONFIG_METADATA_KEY}' metadata ({e})") from None
    _check_config_fits_tensors(config, inferred, path)
    return state, config


# The config fields the tensor shapes decide: metadata may only add what shapes cannot say
# (norm groups, head counts). A few bytes of metadata must not size a model bigger than its tensors.
_SHAPE_FIELDS = {
    "unet": ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
             "layers_per_block", "cross_attention_dim"),
    "vae": ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
            "layers_per_block", "latent_channels"),
    "text_encoder": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "max_position_embeddings"),
}


def _check_config_fits_tensors(config: ModelConfig, inferred: ModelConfig, path: Path) -> None:
    for part, fields in _SHAPE_FIELDS.items():
        said, measured = getattr(config, part), getattr(inferred, part)
        if not isinstance(said, dict):
            raise ModelLoadError(f"{path}: unreadable '{CONFIG_METADATA_KEY}' metadata ({part} is not an object)")
        for name in fields:
            if name in said and said[name] != measured[name]:
                raise ModelLoadError(f"{path}: '{CONFIG_METADATA_KEY}' metadata says {part} {name} {said[name]}, "
                                     f"the tensors say {measured[name]}")


def _shape(state: dict[str, torch.Tensor], key: str, path: Path, ndim: int) -> tuple[int, ...]:
    """The shape of `state[key]`, which must have `ndim` dimensions."""
    if key not in state:
        raise ModelLoadError(f"{path}: missing tensor {key!r}; not a complete SD 1.x checkpoint")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise ModelLoadError(f"{path}: tensor {key!r} has shape {shape}; expected {ndim} dimensions")
    return shape


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def infer_unet_config(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    p = UNET_PREFIX
    in_channels = _shape(state, p + "input_blocks.0.0.weight", path, 4)[1]
    out_channels = _shape(state, p + "out.2.weight", path, 4)[0]
    n_input = _count(state, re.escape(p) + r"input_blocks\.(\d+)\.")
    downsamplers = [i for i in range(n_input) if p + f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamplers) + 1
    per_level = (n_input - 1 - len(downsamplers)) // levels
    channels, has_attn = [], []
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        channels.append(_shape(state, p + f"input_blocks.{first}.0.out_layers.3.weight", path, 4)[0])
        has_attn.append(p + f"input_blocks.{first}.1.proj_in.weight" in state)
    attn_key = next((k for k in state if k.startswith(p) and k.endswith("attn2.to_k.weight")), None)
    cross_dim = _shape(state, attn_key, path, 2)[1] if attn_key else 768
    if cross_dim == 1024:
        raise ModelLoadError(f"{path}: this is an SD 2.x checkpoint (1024-wide text context); emaki loads SD 1.x")
    proj_in = next((state[k] for k in state if k.startswith(p) and k.endswith("proj_in.weight")), None)
    return {
        "sample_size": 64,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "cross_attention_dim": cross_dim,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
        "use_linear_projection": proj_in is not None and proj_in.ndim == 2,
    }


def infer_vae_config(state: dict[str, torch.Tensor], path: Path, prefix: str = VAE_PREFIX) -> dict[str, Any]:
    p = prefix
    levels = _count(state, re.escape(p) + r"encoder\.down\.(\d+)\.")
    per_level = _count(state, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")
    channels = [_shape(state, p + f"encoder.down.{i}.block.0.conv2.weight", path, 4)[0] for i in range(levels)]
    latent = _shape(state, p + "quant_conv.weight", path, 4)[0] // 2
    return {
        "in_channels": _shape(state, p + "encoder.conv_in.weight", path, 4)[1],
        "out_channels": _shape(state, p + "decoder.conv_out.weight", path, 4)[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "latent_channels": latent,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def infer_text_encoder_config(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    p = CLIP_PREFIX + "text_model."
    vocab, hidden = _shape(state, p + "embeddings.token_embedding.weight", path, 2)
    positions = _shape(state, p + "embeddings.position_embedding.weight", path, 2)[0]
    layers = _count(state, re.escape(p) + r"encoder\.layers\.(\d+)\.")
    intermediate = _shape(state, p + "encoder.layers.0.mlp.fc1.weight", path, 2)[0]
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),  # CLIP's 64-wide heads
        "max_position_embeddings": positions,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


def infer_config(state: dict[str, torch.Tensor], path: Path) -> ModelConfig:
    """Architecture sizes from tensor shapes, with SD 1.x conventions for the rest."""
    return ModelConfig(
        unet=infer_unet_config(state, path),
        vae=infer_vae_config(state, path),
        text_encoder=infer_text_encoder_config(state, path),
        schedule=dict(SD1_SCHEDULE),
    )


def save_single_file(components: Any, path: str | Path, *, dtype: torch.dtype | None = torch.float16,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `components` as one LDM-layout `.safetensors`, the layout users' checkpoints have.

    The architecture goes into the `emaki_config` metadata so sizes that SD 1.x conventions
    cannot express (tiny models, the demo model) load back exactly.
    """
    path = Path(path)
    config: ModelConfig = components.config
    state = components_to_ldm(components.unet, components.vae, components.text_encoder,
                              config.unet, config.vae)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state.items()}
    meta = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(config.to_dict())}
    meta.update(metadata or {})
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path

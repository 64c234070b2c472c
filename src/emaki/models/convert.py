"""Key layouts: the original single-file LDM layout ⇄ diffusers/transformers modules.

The LDM layout's key prefixes and old key names are defined here once, for every module that
reads checkpoint keys (loading, merging, lineage). LDM → diffusers uses diffusers' own
single-file converters (imported only when converting: the merger reads these tables and
starts without diffusers). The reverse direction is not in the diffusers wheel (only in their
repository's scripts), so it is written here; a round trip through both is checked bit-exactly
in the tests.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# The parts of an SD 1.x single-file checkpoint, by key prefix:
UNET_PREFIX = "model.diffusion_model."  # the UNet
TEXT_ENCODER_PREFIX = "cond_stage_model."  # the text encoder (SD 2.x: `cond_stage_model.model.`)
CLIP_PREFIX = TEXT_ENCODER_PREFIX + "transformer."  # SD 1.x's CLIP: `[text_model.]embeddings...`
VAE_PREFIX = "first_stage_model."  # the VAE
EMA_PREFIX = "model_ema."  # the UNet's EMA copy, names flattened: `model_ema.diffusion_modelout0weight`
POSITION_IDS = CLIP_PREFIX + "text_model.embeddings.position_ids"  # a buffer, not a weight

_OLD_CLIP_KEY = re.compile("^" + re.escape(CLIP_PREFIX) + r"(embeddings|encoder|final_layer_norm)\.")


def normalize_ldm_key(key: str) -> str:
    """Old CLIP key names (without `text_model.`) → `cond_stage_model.transformer.text_model.…`
    (specs §7.1).

    >>> normalize_ldm_key("cond_stage_model.transformer.final_layer_norm.weight")
    'cond_stage_model.transformer.text_model.final_layer_norm.weight'
    """
    return _OLD_CLIP_KEY.sub(CLIP_PREFIX + r"text_model.\1.", key)


def unwrap_state_dict(data: dict[Any, Any]) -> dict[Any, Any]:
    """The tensors of a checkpoint: `data["state_dict"]` (training checkpoints) when that is a
    dict, else `data` itself."""
    inner = data.get("state_dict", data)
    return inner if isinstance(inner, dict) else data

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN_TO_LDM = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _rename_part(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers `UNet2DConditionModel` keys → `model.diffusion_model.*` keys (no prefix added)."""
    per_level = int(config["layers_per_block"])
    levels = len(config["block_out_channels"])
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    renames: dict[str, str] = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for level in range(levels):
        for j in range(per_level):
            index = 1 + level * (per_level + 1) + j
            renames[f"down_blocks.{level}.resnets.{j}"] = f"input_blocks.{index}.0"
            renames[f"down_blocks.{level}.attentions.{j}"] = f"input_blocks.{index}.1"
        if level < levels - 1:
            index = 1 + level * (per_level + 1) + per_level
            renames[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
        for j in range(per_level + 1):
            index = level * (per_level + 1) + j
            renames[f"up_blocks.{level}.resnets.{j}"] = f"output_blocks.{index}.0"
            renames[f"up_blocks.{level}.attentions.{j}"] = f"output_blocks.{index}.1"
        if level < levels - 1:
            index = level * (per_level + 1) + per_level
            slot = 2 if up_has_attn[level] else 1
            renames[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{index}.{slot}.conv"
    # Longest prefixes first so "mid_block.resnets.0" never shadows a deeper name.
    ordered = sorted(renames.items(), key=lambda kv: -len(kv[0]))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in ordered:
            if key.startswith(old + "."):
                rest = key[len(old) + 1 :]
                if ".resnets." in old or old.startswith("mid_block.resnets"):
                    rest = _rename_part(rest, _RESNET_TO_LDM)
                out[f"{new}.{rest}"] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key!r}")
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers `AutoencoderKL` keys → standalone VAE keys (as in `*.vae.pt`, no prefix)."""
    levels = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        rest = ".".join(parts[1:])
        if side in ("quant_conv", "post_quant_conv"):
            out[key] = value
            continue
        rest = rest.replace("conv_norm_out", "norm_out", 1) if rest.startswith("conv_norm_out") else rest
        if rest.startswith(("down_blocks.", "up_blocks.")):
            kind, level_s, sub, *tail = rest.split(".")
            level = int(level_s)
            if kind == "up_blocks":
                level = levels - 1 - level
            ldm_kind = "down" if kind == "down_blocks" else "up"
            if sub == "resnets":
                j, *tail = tail
                rest = f"{ldm_kind}.{level}.block.{j}." + ".".join(tail).replace(
                    "conv_shortcut", "nin_shortcut"
                )
            else:  # downsamplers.0.conv / upsamplers.0.conv
                rest = f"{ldm_kind}.{level}.{'downsample' if ldm_kind == 'down' else 'upsample'}." + ".".join(tail[1:])
        elif rest.startswith("mid_block.resnets."):
            _, _, j, *tail = rest.split(".")
            rest = f"mid.block_{int(j) + 1}." + ".".join(tail).replace("conv_shortcut", "nin_shortcut")
        elif rest.startswith("mid_block.attentions.0."):
            inner = rest[len("mid_block.attentions.0.") :]
            inner = _rename_part(inner, _VAE_ATTN_TO_LDM)
            rest = "mid.attn_1." + inner
            if value.ndim == 2:  # the LDM attention uses 1x1 convolutions
                value = value[:, :, None, None]
        out[f"{side}.{rest}"] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 `CLIPTextModel` keys → `cond_stage_model.transformer.text_model.*` (no prefix)."""
    out = {}
    for key, value in state.items():
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


def components_to_ldm(unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module,
                      unet_config: dict[str, Any], vae_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The full single-file state dict of a model, in the original LDM layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet_config).items():
        out[UNET_PREFIX + key] = value
    for key, value in text_encoder_to_ldm(text_encoder.state_dict()).items():
        out[CLIP_PREFIX + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), vae_config).items():
        out[VAE_PREFIX + key] = value
    return out


def ldm_to_unet(checkpoint: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*` → diffusers UNet keys (non-EMA weights, as A1111 loads)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return convert_ldm_unet_checkpoint(checkpoint, config)


def ldm_to_vae(checkpoint: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """`first_stage_model.*` → diffusers VAE keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return convert_ldm_vae_checkpoint(checkpoint, config)


def ldm_to_text_encoder(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`cond_stage_model.transformer.[text_model.]*` → transformers 5 `CLIPTextModel` keys."""
    out = {}
    for key, value in checkpoint.items():
        if not key.startswith(CLIP_PREFIX):
            continue
        rest = key[len(CLIP_PREFIX) :]
        rest = rest.removeprefix("text_model.")
        if rest == "embeddings.position_ids":
            continue
        out[rest] = value
    return out

"""The modules a LoRA can patch, under every name LoRA files use for them.

emaki's models are diffusers `UNet2DConditionModel` + transformers `CLIPTextModel`; a module
with a `weight` parameter is known as

* kohya: `lora_unet_` / `lora_te_` (`lora_te1_`) + its path with `_` for `.`, the UNet path in
  diffusers' names (`down_blocks_0_attentions_0_proj_in`) or the LDM ones
  (`input_blocks_1_1_proj_in`, from `emaki.models.convert.unet_to_ldm`); LyCORIS's `lycoris_`
  and kohya OFT's `oft_unet_` prefixes the same way;
* PEFT/diffusers: `unet.` / `text_encoder.` + the dotted path (or the bare path), and the old
  attention-processor spelling `unet.<block>.attn1.processor.to_q` (`to_out` for `to_out.0`).

A1111 builds the same table (`network_layer_mapping`) over its LDM modules; ComfyUI's
`model_lora_keys_unet/clip` over its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from emaki.models.convert import unet_to_ldm

Component = Literal["unet", "text_encoder"]

_ATTENTION_PROJECTION = re.compile(r"^(.*)\.(to_[qkv]|to_out)(?:\.0)?$")


@dataclass(frozen=True)
class Target:
    """One patchable module: which component it is in (which multiplier applies), its path."""

    component: Component
    path: str
    module: torch.nn.Module

    @property
    def weight(self) -> torch.Tensor:
        weight = self.module.weight
        assert isinstance(weight, torch.Tensor)
        return weight


def _weighted_modules(root: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    for path, module in root.named_modules():
        if path and isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            yield path, module


def _underscored(path: str) -> str:
    return path.replace(".", "_")


def _unet_ldm_paths(unet: torch.nn.Module, config: dict[str, Any]) -> dict[str, str]:
    """diffusers module path → LDM module path (`down_blocks.0.attentions.0` → `input_blocks.1.1`)."""
    weights: dict[str, torch.Tensor] = {name: param for name, param in unet.named_parameters()
                                        if name.endswith(".weight")}
    try:
        renamed = unet_to_ldm(weights, config)
    except (KeyError, ValueError, TypeError):  # an architecture the table does not know: no LDM names
        return {}
    by_tensor = {id(value): key for key, value in renamed.items()}
    return {name.removesuffix(".weight"): by_tensor[id(param)].removesuffix(".weight")
            for name, param in weights.items() if id(param) in by_tensor}


def unet_names(path: str, ldm_path: str | None) -> list[str]:
    """Every name of a UNet module in LoRA files.

    >>> unet_names("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0")[:4]
    ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0', 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0', 'lycoris_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0']
    """
    names = [f"lora_unet_{_underscored(path)}", f"unet.{path}", path, f"lycoris_{_underscored(path)}",
             f"oft_unet_{_underscored(path)}"]
    projection = _ATTENTION_PROJECTION.match(path)
    if projection:
        old = f"{projection.group(1)}.processor.{projection.group(2)}"
        names += [f"unet.{old}", old]
    if ldm_path:
        names += [f"lora_unet_{_underscored(ldm_path)}", f"lycoris_{_underscored(ldm_path)}",
                  f"oft_unet_{_underscored(ldm_path)}", f"model.diffusion_model.{ldm_path}"]
    return names


def text_encoder_names(path: str) -> list[str]:
    """Every name of a text-encoder module in LoRA files (transformers 5 drops `text_model.`
    from the module paths; LoRA files keep it).

    >>> text_encoder_names("encoder.layers.0.mlp.fc1")[:3]
    ['lora_te_text_model_encoder_layers_0_mlp_fc1', 'lora_te1_text_model_encoder_layers_0_mlp_fc1', 'text_encoder.text_model.encoder.layers.0.mlp.fc1']
    """
    full = path if path.startswith("text_model.") else f"text_model.{path}"
    return [f"lora_te_{_underscored(full)}", f"lora_te1_{_underscored(full)}", f"text_encoder.{full}", full,
            f"text_encoder.{path}", path]


class LayerTargets:
    """Name in a LoRA file → `Target`, for one model's UNet and text encoder."""

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module, unet_config: dict[str, Any]) -> None:
        self._by_name: dict[str, Target] = {}
        ldm = _unet_ldm_paths(unet, unet_config)
        for path, module in _weighted_modules(text_encoder):
            self._add(text_encoder_names(path), Target("text_encoder", path, module))
        for path, module in _weighted_modules(unet):
            self._add(unet_names(path, ldm.get(path)), Target("unet", path, module))

    def _add(self, names: list[str], target: Target) -> None:
        for name in names:
            self._by_name.setdefault(name, target)

    def get(self, name: str) -> Target | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def model_targets(components: Any) -> LayerTargets:
    """The targets of a loaded model (`SDComponents`)."""
    return LayerTargets(components.unet, components.text_encoder, components.config.unet)


@functools.cache
def sd15_targets() -> LayerTargets:
    """The targets of an SD 1.5 model, built on the meta device (no weights): what listings
    check a file's keys against before any model is loaded."""
    from diffusers.models import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from emaki.models.configs import sd15_config

    config = sd15_config()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**config.text_encoder))
    return LayerTargets(unet, text_encoder, config.unet)

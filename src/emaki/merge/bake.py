"""Baking LoRAs into a merge's output, tensor by tensor (kohya `networks/merge_lora.py`, with
A1111's arithmetic: `emaki.networks.lora.apply`).

Every module of every LoRA is mapped to the checkpoint key it patches (`CheckpointNames`: kohya,
LDM and PEFT spellings); for an output tensor W (the merge of the sources, float32) the result is

    W + Σ_lora ΔW_lora            ΔW = m · (module's update) · scale,  m = the LoRA's TE or UNet multiplier

rounded once to the output dtype. ΔW is computed from W itself (DoRA, OFT and IA³ need it), as
A1111 does. A plain LoRA (`up · down`, the common case) is computed for the rows of the slice
being written only, so memory stays at a few slices; any other module type (LoHa, LoKr, OFT,
DoRA, CP-decomposed LoCon, ...) computes its whole ΔW for that one tensor. `diff_b`/`b_norm`
parts patch the bias key. LoRA tensors are read from the file when their key is reached
(`open_source`), so a LoRA's size does not add to the memory either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from emaki.errors import EmakiError
from emaki.merge.recipe import LoraRef, MergeError
from emaki.merge.sources import TensorInfo, TensorSource
from emaki.networks.lora.extract import CheckpointNames
from emaki.networks.lora.formats import group_modules, sd_version
from emaki.networks.lora.modules import LoraUpDown, NetworkModule, module_type, network_module

_PLAIN_LORA_PARTS = frozenset({"lora_up.weight", "lora_down.weight", "alpha", "scale"})
_BIAS_PARTS = ("diff_b", "b_norm")


@dataclass(frozen=True)
class _Contribution:
    """One LoRA module's share of one output tensor."""

    lora: LoraRef
    source: TensorSource
    module: str  # its name in the file
    parts: dict[str, str]  # part → key in the file
    multiplier: float
    bias: bool  # patches the layer's bias (Δb) rather than its weight
    rows: bool  # a plain LoRA whose ΔW can be computed a few rows at a time

    def where(self) -> str:
        return f"lora {self.lora.label!r} ({self.source.label}): module {self.module}"


class LoraBake:
    """The LoRA patches of one merge's output keys (see the module docstring)."""

    def __init__(self, loras: Sequence[tuple[LoraRef, TensorSource]], outputs: Mapping[str, TensorInfo]):
        self.outputs = outputs
        names = CheckpointNames(outputs)
        self.patches: dict[str, list[_Contribution]] = {}
        #: per LoRA (by label): its keys that name no tensor of this model (not applied)
        self.unmatched: dict[str, list[str]] = {}
        for lora, source in loras:
            self._plan_lora(lora, source, names)
        self._factors_key: str | None = None
        self._factors: list[tuple[torch.Tensor, torch.Tensor, float, float]] = []

    def _plan_lora(self, lora: LoraRef, source: TensorSource, names: CheckpointNames) -> None:
        keys = source.keys()
        version = sd_version(source.metadata, keys)
        if version in ("sd2", "sdxl"):
            raise MergeError(f"lora {lora.label!r} ({source.label}) is made for {version.upper()}; "
                             "emaki bakes LoRAs into SD 1.x models")
        groups, unknown = group_modules(keys)
        missing = list(unknown)
        matched = 0
        for name, parts in groups.items():
            module = names.find(name)
            kind = module_type(parts.keys())
            if kind is None:
                raise MergeError(f"lora {lora.label!r} ({source.label}): no LoRA module type accepts "
                                 f"{name} ({', '.join(sorted(parts))})")
            if module is None or module.weight_key not in self.outputs:
                missing += parts.values()
                continue
            matched += 1
            multiplier = lora.te if module.component == "text_encoder" else lora.unet
            if multiplier == 0:
                continue
            weight = self.outputs[module.weight_key]
            rows = (kind is LoraUpDown and set(parts) <= _PLAIN_LORA_PARTS
                    and self._rows_fit(lora, source, name, parts, weight))
            self._add(module.weight_key, _Contribution(lora, source, name, parts, multiplier, False, rows))
            if any(part in parts for part in _BIAS_PARTS):
                if module.bias_key in self.outputs:
                    self._add(module.bias_key, _Contribution(lora, source, name, parts, multiplier, True, False))
                else:
                    missing += [parts[p] for p in _BIAS_PARTS if p in parts]
        if groups and not matched:
            raise MergeError(
                f"lora {lora.label!r} ({source.label}): none of its {len(groups)} modules names a layer "
                f"of this model (is it made for another base model? ss_base_model_version: "
                f"{source.metadata.get('ss_base_model_version', 'not given')})")
        if missing:
            self.unmatched[lora.label] = missing

    def _add(self, key: str, contribution: _Contribution) -> None:
        info = self.outputs[key]
        if not info.dtype.is_floating_point:
            raise MergeError(f"{contribution.where()}: {key!r} is not a floating-point tensor")
        self.patches.setdefault(key, []).append(contribution)

    @staticmethod
    def _rows_fit(lora: LoraRef, source: TensorSource, name: str, parts: dict[str, str],
                  weight: TensorInfo) -> bool:
        up = source.info(parts["lora_up.weight"]).shape
        down = source.info(parts["lora_down.weight"]).shape
        if len(up) < 2 or len(down) < 2 or up[1] != down[0]:
            raise MergeError(f"lora {lora.label!r} ({source.label}): module {name} has lora_up "
                             f"{list(up)} and lora_down {list(down)}, which do not multiply")
        if up[0] * math.prod(down[1:]) != weight.numel:
            if len(weight.shape) == 4 and weight.shape[1] in (8, 9):
                return False  # a 4-channel update on an inpainting conv_in: padded (whole tensor)
            raise MergeError(
                f"lora {lora.label!r} ({source.label}): module {name} (up {list(up)}, down {list(down)}) "
                f"does not fit the model's {list(weight.shape)} weight (is it made for another base "
                f"model? ss_base_model_version: {source.metadata.get('ss_base_model_version', 'not given')})")
        return up[0] == weight.shape[0]

    def rows(self, key: str) -> bool:
        """Whether `key`'s ΔW is computed a slice at a time (every patch a plain LoRA)."""
        return all(c.rows for c in self.patches[key])

    # ---- values ---------------------------------------------------------------------------
    def _tensor(self, source: TensorSource, key: str) -> torch.Tensor:
        info = source.info(key)
        return source.read(key, 0, info.numel).to(torch.float32, copy=True).reshape(info.shape)

    def _module(self, c: _Contribution) -> NetworkModule:
        return network_module({part: self._tensor(c.source, k) for part, k in c.parts.items()}, c.where())

    def delta_slice(self, key: str, start: int, count: int) -> torch.Tensor:
        """Elements `[start, start + count)` of ΣΔW for `key`, flattened (float32; `rows(key)`).

        Only the rows of `up` the slice touches are multiplied; the scale and multiplier are
        applied after the product and the modules summed before W is added, in A1111's order."""
        if self._factors_key != key:
            self._factors = []
            for c in self.patches[key]:
                module = self._module(c)
                up, down = module.parts["lora_up.weight"], module.parts["lora_down.weight"]
                self._factors.append((up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1),
                                      module.scale, c.multiplier))
            self._factors_key = key
        total: torch.Tensor | None = None
        for up, down, scale, multiplier in self._factors:
            cols = down.shape[1]
            first, last = start // cols, -(-(start + count) // cols)
            block = (up[first:last] @ down).mul_(scale).mul_(multiplier)
            offset = start - first * cols
            values = block.reshape(-1)[offset : offset + count]
            total = values if total is None else total.add_(values)
        assert total is not None
        return total

    def whole_delta(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        """ΣΔW (or ΣΔb for a bias) of `key` for the float32 output tensor `weight` (pre-LoRA)."""
        total: torch.Tensor | None = None
        for c in self.patches[key]:
            module = self._module(c)
            try:
                if c.bias:
                    extra = module.bias_update(weight)
                    assert extra is not None
                    delta = (extra * c.multiplier).reshape(weight.shape)
                else:
                    delta, _ = module.delta(weight, c.multiplier)
            except (ValueError, RuntimeError, EmakiError) as error:
                raise MergeError(
                    f"{c.where()} does not fit {key!r} {list(weight.shape)}: {error} (is it made for "
                    f"another base model? ss_base_model_version: "
                    f"{c.source.metadata.get('ss_base_model_version', 'not given')})") from None
            total = delta if total is None else total + delta
        assert total is not None
        return total


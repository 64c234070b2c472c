"""Applying LoRAs to a model: weights patched, not forward hooks (A1111's
`network_apply_weights`, ComfyUI's `calculate_weight`).

For each weight, the ΔW of every chosen LoRA module naming it is computed from the original
weight (float32) and summed; the weight is replaced, for the run, by `W + ΣΔW` in its own dtype
through the caller's `replace` (the engine's `ModelHandle.replace_weight`, undone when the run
ends). Text-encoder weights take a tag's TE multiplier, UNet weights its UNet multiplier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from emaki.errors import ModelLoadError, PromptError
from emaki.networks.lora.library import LoraNetwork
from emaki.networks.lora.targets import LayerTargets
from emaki.prompts.networks import NetworkTag

log = logging.getLogger(__name__)

Replace = Callable[[torch.nn.Module, str, torch.Tensor], None]


@dataclass(frozen=True)
class ChosenLora:
    """One LoRA as a prompt asks for it: the TE and UNet multipliers, DyLoRA's rank limit, and
    the name it was mentioned by (what the infotext records)."""

    network: LoraNetwork
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None
    mentioned: str = ""


def lora_strengths(tag: NetworkTag) -> tuple[float, float, int | None]:
    """(TE, UNet, dyn) of `<lora:NAME:TE:UNET:DYN>` (also `te=`, `unet=`, `dyn=`), A1111's
    defaults: TE 1, UNet = TE, dyn none.

    >>> lora_strengths(NetworkTag("lora", ("x", "0.5")))
    (0.5, 0.5, None)
    >>> lora_strengths(NetworkTag("lora", ("x", "0.5", "unet=0.2", "dyn=8")))
    (0.5, 0.2, 8)
    """
    positional, named = tag.positional, tag.named

    def number(key: str, index: int, default: float | None, kind: type) -> float | None:
        text = named.get(key, positional[index] if len(positional) > index else None)
        if text is None:
            return default
        try:
            return float(kind(text))
        except ValueError:
            raise PromptError(f"network tag {tag.text!r}: {key} {text!r} is not a number") from None

    te = number("te", 1, 1.0, float)
    unet = number("unet", 2, te, float)
    dyn = number("dyn", 3, None, int)
    assert te is not None and unet is not None
    return te, unet, None if dyn is None else int(dyn)


@dataclass
class AppliedLoras:
    """What `apply_loras` did: weights replaced, and per LoRA the keys that named no module."""

    weights: int
    unmatched: dict[str, list[str]]


def apply_loras(chosen: Sequence[ChosenLora], targets: LayerTargets, replace: Replace) -> AppliedLoras:
    """Patch the model `targets` describes with every chosen LoRA (see the module docstring).
    A module whose update does not fit its weight is an error naming the LoRA (a LoRA for
    another base model); keys naming no module are kept on the network and logged once."""
    sums: dict[tuple[int, str], tuple[torch.nn.Module, str, torch.Tensor]] = {}

    def add(module: torch.nn.Module, name: str, delta: torch.Tensor) -> None:
        key = (id(module), name)
        if key in sums:
            sums[key][2].add_(delta)  # every delta is a new tensor (`NetworkModule.delta`): summed in place
        else:
            sums[key] = (module, name, delta)

    unmatched: dict[str, list[str]] = {}
    with torch.no_grad():
        for lora in chosen:
            network = lora.network
            missing: list[str] = list(network.unknown_keys)
            misfits: list[str] = []
            for name, network_module in network.modules.items():
                target = targets.get(name)
                if target is None:
                    missing += network.keys[name]
                    continue
                multiplier = lora.te if target.component == "text_encoder" else lora.unet
                if multiplier == 0:
                    continue
                try:
                    delta_w, delta_b = network_module.delta(target.weight, multiplier, lora.dyn)
                except (ValueError, RuntimeError) as error:
                    misfits.append(f"{name}: {error}")
                    continue
                add(target.module, "weight", delta_w)
                if delta_b is not None:
                    add(target.module, "bias", delta_b)
            if misfits:
                raise ModelLoadError(
                    f"lora {lora.mentioned or network.file.name!r} ({network.file.path}): {len(misfits)} of "
                    f"{len(network.modules)} modules do not fit this model, e.g. {misfits[0]} "
                    f"(is it made for another base model? ss_base_model_version: "
                    f"{network.file.metadata.get('ss_base_model_version', 'not given')})")
            _note_unmatched(network, missing)
            if missing:
                unmatched[network.file.name] = missing
        for module, name, delta in sums.values():
            base = getattr(module, name)
            if base is None:  # a bias added where the layer has none (A1111 does the same)
                weight = module.weight
                assert isinstance(weight, torch.Tensor)
                replace(module, name, delta.to(dtype=weight.dtype))
            elif delta.dtype == base.dtype and delta.device == base.device:
                replace(module, name, delta.add_(base))  # W + ΔW into ΔW's own memory
            else:
                replace(module, name, base + delta.to(device=base.device, dtype=base.dtype))
    return AppliedLoras(len(sums), unmatched)


@dataclass
class KeptPatches:
    """The weights one list of chosen LoRAs made for one model, kept between runs: a run asking
    for the same LoRA files (as loaded: a changed file loads as a new network) at the same
    strengths, in the same order, swaps them in without computing any ΔW again. A1111 keeps its
    patched weights for the same reason. The model itself is restored after every run as before;
    what is kept costs the size of the patched weights (`LoraLibrary.kept` drops it with the model)."""

    chosen: tuple[ChosenLora, ...]
    weights: list[tuple[torch.nn.Module, str, torch.Tensor]]

    @classmethod
    def make(cls, chosen: Sequence[ChosenLora], targets: LayerTargets) -> KeptPatches:
        weights: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        apply_loras(chosen, targets, lambda module, name, value: weights.append((module, name, value)))
        return cls(tuple(chosen), weights)

    def serves(self, chosen: Sequence[ChosenLora]) -> bool:
        return len(chosen) == len(self.chosen) and all(
            a.network is b.network and (a.te, a.unet, a.dyn) == (b.te, b.unet, b.dyn)
            for a, b in zip(chosen, self.chosen, strict=True))


def _note_unmatched(network: LoraNetwork, missing: list[str]) -> None:
    first_time = network.unmatched is None
    network.unmatched = missing
    if first_time and missing:
        log.warning("lora %s: %d keys name no module of this model (not applied): %s%s", network.file.path,
                    len(missing), ", ".join(missing[:5]), ", ..." if len(missing) > 5 else "")


def lora_hashes(chosen: Sequence[ChosenLora], shorthash: Callable[[LoraNetwork], str]) -> str | None:
    """The infotext `Lora hashes` value, `"name: 12hex, ..."` by the names the prompt used
    (`:` and `,` removed, as A1111); None when empty."""
    parts: dict[str, str] = {}
    for lora in chosen:
        name = (lora.mentioned or lora.network.file.name).replace(":", "").replace(",", "")
        if name:
            parts.setdefault(name, f"{name}: {shorthash(lora.network)}")
    return ", ".join(parts.values()) or None

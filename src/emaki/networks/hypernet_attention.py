"""Hypernetworks applied to a diffusers UNet through an attention processor (specs §1.4).

In every attention layer, the context (the text encoding for `attn2`, the hidden states
themselves for the self-attention `attn1`) goes through each active hypernetwork's module pair
of that width before `to_k` and `to_v`:

    k = to_k(hnN_k(… hn1_k(context))),   v = to_v(hnN_v(… hn1_v(context))),   q = to_q(x)

Layers whose context width no hypernetwork has keep their processor. Nothing global is
patched: `apply_hypernetworks` swaps processors on this UNet and returns a handle whose
`remove()` puts the previous processors back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from emaki.networks.hypernetworks import Hypernetwork, HypernetworkModule

# (key module, value module, strength) for one hypernetwork at one width.
HyperPair = tuple[HypernetworkModule, HypernetworkModule, float]


class HypernetworkAttnProcessor:
    """Scaled-dot-product attention whose K/V inputs pass through hypernetwork modules first.

    Computes what diffusers' `AttnProcessor2_0` computes for SD 1.x attention, except that
    `to_k` sees `hk(context)` and `to_v` sees `hv(context)` (chained over `pairs`, in order).
    """

    def __init__(self, pairs: Sequence[HyperPair]) -> None:
        self.pairs = list(pairs)

    def context_for_key(self, context: torch.Tensor) -> torch.Tensor:
        for module_k, _, strength in self.pairs:
            context = module_k.apply_with_strength(context, strength)
        return context

    def context_for_value(self, context: torch.Tensor) -> torch.Tensor:
        for _, module_v, strength in self.pairs:
            context = module_v.apply_with_strength(context, strength)
        return context

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, sequence_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(self.context_for_key(context))
        value = attn.to_v(self.context_for_value(context))
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_layers(unet: nn.Module) -> dict[str, Any]:
    """`{processor name: Attention module}` for every attention layer of a diffusers UNet,
    named as `unet.attn_processors` names them (`...attn1.processor`)."""
    layers = {}
    for name, module in unet.named_modules():
        if hasattr(module, "set_processor") and hasattr(module, "to_k"):
            layers[f"{name}.processor"] = module
    return layers


@dataclass
class AppliedHypernetworks:
    """What `apply_hypernetworks` changed; `remove()` restores the previous processors."""

    unet: nn.Module
    previous: dict[str, Any]
    processors: dict[str, HypernetworkAttnProcessor]

    def remove(self) -> None:
        layers = attention_layers(self.unet)
        for name, processor in self.previous.items():
            layers[name].set_processor(processor)
        self.processors = {}
        self.previous = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_hypernetworks(unet: nn.Module, hypernetworks: Sequence[tuple[Hypernetwork, float]]) -> AppliedHypernetworks:
    """Install hypernetworks on `unet` (in order: the first acts first) with their strengths.

    Each attention layer gets the module pairs whose width equals its context width
    (`to_k.in_features`): the text-encoding width for `attn2`, the block width for `attn1`.
    Widths the model lacks are ignored. Modules are moved to the UNet's device.
    """
    layers = attention_layers(unet)
    device = next(unet.parameters()).device
    for hn, _ in hypernetworks:
        hn.to(device=device)
    previous: dict[str, Any] = {}
    installed: dict[str, HypernetworkAttnProcessor] = {}
    for name, attn in layers.items():
        width = attn.to_k.in_features
        pairs = [(hn.layers[width][0], hn.layers[width][1], float(strength))
                 for hn, strength in hypernetworks if width in hn.layers]
        if not pairs:
            continue
        previous[name] = attn.processor
        processor = HypernetworkAttnProcessor(pairs)
        attn.set_processor(processor)
        installed[name] = processor
    return AppliedHypernetworks(unet, previous, installed)

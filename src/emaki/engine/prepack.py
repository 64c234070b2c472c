"""Convolution weights kept in oneDNN's own blocked layout (prepacked), so a bf16 UNet step on a
CPU stops reordering every conv weight on every call (issue 19).

In bf16 channels-last, oneDNN's AMX/AVX-512 convolution wants its weights blocked
(`AcdB16b32a2b` and kin); given torch's `OHWI` weight it reorders all of them on each call: 98
reorders per SD 1.5 UNet call, one per conv (`benchmarks/exact_path.py reorders`). Packing once
with `torch.ops.mkldnn._reorder_convolution_weight` and calling
`torch.ops.mkldnn._convolution_pointwise` (the ops inductor's freezing emits) runs the same kernel
on the same numbers: the output is bit-identical, only the copy goes.

A packed weight is remade when the weight changes (a change in place bumps its version counter;
a LoRA run swaps in another tensor, `ModelHandle.replace_weight`), and the plain convolution runs whenever autograd
is on (training), or for another device, dtype or layout than the one packed for."""

from __future__ import annotations

import weakref

import torch
from torch import nn


class PackedConvForward:
    """A Conv2d's forward that keeps its weight prepacked for a bf16 channels-last CPU input."""

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv
        self.packed: torch.Tensor | None = None
        # What was packed: the weight tensor (weakly: a run's LoRA weight may die and another take
        # its address), its version (in-place changes) and the input shape.
        self.packed_from: weakref.ref[torch.Tensor] | None = None
        self.packed_for: tuple[int, tuple[int, ...]] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv, weight = self.conv, self.conv.weight
        if not _packable(x, weight):
            return conv._conv_forward(x, weight, conv.bias)
        key = (weight._version, tuple(x.shape))
        if self.packed is None or self.packed_from is None or self.packed_from() is not weight or self.packed_for != key:
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape))
            self.packed_from, self.packed_for = weakref.ref(weight), key
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            "none", [], "")


def _packable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == weight.dtype == torch.bfloat16
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def packable_convs(module: nn.Module) -> list[nn.Conv2d]:
    """The convolutions `set_prepacked` handles: 2-d, zero padding given as numbers."""
    return [m for m in module.modules() if type(m) is nn.Conv2d and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)]


def is_prepacked(module: nn.Module) -> bool:
    return any(isinstance(conv.__dict__.get("forward"), PackedConvForward) for conv in packable_convs(module))


def set_prepacked(module: nn.Module, prepacked: bool) -> None:
    """Give every plain Conv2d of `module` the prepacking forward, or take it away again. Only
    where oneDNN is there (`torch.backends.mkldnn.is_available()`); a module already in the
    asked-for state is left as it is."""
    if prepacked and not torch.backends.mkldnn.is_available():
        return
    for conv in packable_convs(module):
        current = conv.__dict__.get("forward")
        if prepacked and not isinstance(current, PackedConvForward):
            conv.forward = PackedConvForward(conv)  # type: ignore[method-assign, assignment]
        elif not prepacked and isinstance(current, PackedConvForward):
            del conv.forward

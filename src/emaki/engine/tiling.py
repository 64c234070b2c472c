"""Seamless tiling (A1111's `tiling`): pictures whose left and right edges, and top and bottom,
continue into each other, so that copies laid side by side show no seam.

Every UNet and VAE convolution pads circularly instead of with zeros for the run (A1111 sets
`padding_mode = 'circular'` on every `Conv2d` of the model; its `sd_hijack.apply_circular`):
a convolution at the right edge then reads the left edge's pixels as its neighbours, so the
whole model computes on a torus. Sampling, attention and normalisation have no borders, so the
picture has none either. The modes are set through the run's `ModelHandle` and put back when
the run ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Extension, Run
from emaki.params import GenerationParams


def padded_convolutions(module: torch.nn.Module) -> Iterator[torch.nn.Conv2d]:
    """The 2-D convolutions of `module` that pad their input (a 1×1 or unpadded convolution
    reads no pixel past the edge, so its padding mode changes nothing)."""
    for child in module.modules():
        if isinstance(child, torch.nn.Conv2d) and any(child._reversed_padding_repeated_twice):
            yield child


class SeamlessTiling(Extension):
    """`tiling: true`: circular padding in the UNet's and the VAE's convolutions for this run
    (the VAE's encoder too, as in A1111: img2img and hires fix read their picture as a tile)."""

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        parts = handle.components
        for part in (parts.unet, parts.vae):
            for conv in padded_convolutions(part):
                handle.set_attribute(conv, "padding_mode", "circular")


def tiling_extensions(params: GenerationParams) -> list[Extension]:
    """The tiling extension when the params ask for it."""
    return [SeamlessTiling()] if params.tiling else []

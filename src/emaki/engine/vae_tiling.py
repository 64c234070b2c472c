"""The VAE in overlapping tiles, for pictures whose whole pass would not fit in memory.

Only the full-resolution half of each network is tiled: the decoder's up blocks (and the
encoder's down blocks), where the memory goes: at 1024² the last up block holds 128-256
channels × 1024² per activation, while the middle block works at the latents' size (1/64 of
the pixels). The middle block, whose attention sees every latent pixel, runs once on the whole
picture, as untiled. Each tile is computed with a `margin` of latent pixels past each inner
side, dropped afterwards (there its convolutions saw zero padding instead of its neighbour);
tiles share `overlap` latent pixels, blended with weights that ramp linearly across them
(w = (i + ½) / overlap, 1 inside), so no seam remains.

With the picture's GroupNorm statistics the margins make the tiles exact (measured: 2e-6 off
a whole decode). What differs is that a tile's GroupNorm layers normalise with the tile's own
statistics, not the picture's (as diffusers' `tiled_decode` does). Making them the picture's
needs either every tile's activations held at once (the memory tiling is meant to save) or one
more pass over the tiles per GroupNorm (25 in SD's decoder); reusing one pass's statistics in a
second did not converge. How close a tiled picture comes depends on the VAE and the picture
(docs/performance.md: 43.8 dB for SD 1.5's architecture with random weights, ~20 dB for the demo
model's trained VAE), which is why the policy tiles by default only when a whole pass would not
fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

# Latent pixels. 96 (768² pixels for SD 1.x) splits 1024² into 2×2 tiles computing 1.4× the
# pixels of a whole pass (64 would make 3×3 tiles computing 1.9×).
TILE = 96
OVERLAP = 8  # latent pixels shared by neighbouring tiles (64 pixels of blending for SD 1.x)
MARGIN = 8  # latent pixels computed past a tile's inner edges and dropped: where zero padding showed


def tile_spans(length: int, tile: int = TILE, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """Start and end of each tile along one side of `length`: as few tiles as fit `tile` with at
    least `overlap` shared between neighbours, all of one size (the overlap spread evenly).

    >>> tile_spans(128, 64, 8)
    [(0, 48), (40, 88), (80, 128)]
    >>> tile_spans(128)
    [(0, 68), (60, 128)]
    >>> tile_spans(60, 64, 8)
    [(0, 60)]
    """
    if length <= tile:
        return [(0, length)]
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    return [(start, start + size) for start in starts]


def edge_ramp(size: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """Blending weights along one side of a tile: ramping up over its first `ramp` pixels when
    a tile overlaps it there (`rise`), down over its last (`fall`), 1 elsewhere; never 0."""
    weights = torch.ones(size)
    ramp = min(ramp, size)
    up = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
    if rise:
        weights[:ramp] = torch.minimum(weights[:ramp], up)
    if fall:
        weights[size - ramp:] = torch.minimum(weights[size - ramp:], up.flip(0))
    return weights


def tiles(height: int, width: int, tile: int, overlap: int, margin: int) -> Iterator[Tile]:
    """Each tile of a height×width latent, with `margin` more latent pixels on each side that
    borders another tile (as far as the picture goes)."""
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    for r, (y0, y1) in enumerate(rows):
        for c, (x0, x1) in enumerate(cols):
            yield Tile(y0, y1, x0, x1, max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin),
                       min(width, x1 + margin), (r > 0, r < len(rows) - 1, c > 0, c < len(cols) - 1))


@dataclass(frozen=True)
class Tile:
    """A tile's own rows and columns (y0:y1, x0:x1), the larger area it is computed on (its
    margins: what its convolutions read past its edges), and which of its sides (top, bottom,
    left, right) overlap another tile."""

    y0: int
    y1: int
    x0: int
    x1: int
    top: int
    bottom: int
    left: int
    right: int
    inner: tuple[bool, bool, bool, bool]

    def computed(self, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """The area of `x` (`factor` × the latent's size) this tile is computed on."""
        return x[..., self.top * factor:self.bottom * factor, self.left * factor:self.right * factor]

    def cropped(self, out: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """The tile's own part of `out` (computed on its margins, `factor` × the latent's size)."""
        dy, dx = (self.y0 - self.top) * factor, (self.x0 - self.left) * factor
        return out[..., dy:dy + (self.y1 - self.y0) * factor, dx:dx + (self.x1 - self.x0) * factor]

    def rows(self, factor: int = 1) -> slice:
        return slice(self.y0 * factor, self.y1 * factor)

    def cols(self, factor: int = 1) -> slice:
        return slice(self.x0 * factor, self.x1 * factor)


class Blend:
    """A picture assembled from overlapping tiles: Σ wᵢ·tileᵢ / Σ wᵢ, in float32."""

    def __init__(self, batch: int, channels: int, height: int, width: int, device: torch.device) -> None:
        self.sum = torch.zeros(batch, channels, height, width, device=device)
        self.weight = torch.zeros(1, 1, height, width, device=device)

    def add(self, part: torch.Tensor, tile: Tile, factor: int, ramp: int) -> None:
        """`part`: the tile computed on its margins, at `factor` × the latent's size."""
        part = tile.cropped(part, factor)
        top, bottom, left, right = tile.inner
        h, w = part.shape[-2:]
        weight = (edge_ramp(h, ramp, top, bottom)[:, None] * edge_ramp(w, ramp, left, right)[None, :]).to(part.device)
        rows, cols = tile.rows(factor), tile.cols(factor)
        self.sum[..., rows, cols] += part.float() * weight
        self.weight[..., rows, cols] += weight

    def result(self) -> torch.Tensor:
        return self.sum / self.weight


def decode_tiled(vae: Any, z: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP,
                 margin: int = MARGIN) -> torch.Tensor:
    """`vae.decode(z).sample` (float32) with the up blocks run tile by tile (module docstring)."""
    decoder = vae.decoder
    h = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    h = decoder.mid_block(decoder.conv_in(h), None)  # whole: its attention sees every latent pixel
    factor = 2 ** sum(block.upsamplers is not None for block in decoder.up_blocks)
    height, width = h.shape[-2:]
    out = Blend(z.shape[0], decoder.conv_out.out_channels, height * factor, width * factor, z.device)
    for part in tiles(height, width, tile, overlap, margin):
        x = part.computed(h)
        for block in decoder.up_blocks:
            x = block(x, None)
        out.add(decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(x))), part, factor, overlap * factor)
    return out.result()


def layout_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


def encode_tiled(vae: Any, pixels: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP,
                 margin: int = MARGIN) -> torch.Tensor:
    """The posterior's moments (`vae.encode(pixels)`'s, before the Gaussian) with the down blocks
    run tile by tile; `pixels`' sides must be multiples of the VAE's scale factor."""
    encoder = vae.encoder
    factor = 2 ** sum(block.downsamplers is not None for block in encoder.down_blocks)
    height, width = pixels.shape[-2] // factor, pixels.shape[-1] // factor
    channels = encoder.mid_block.resnets[0].in_channels
    features = Blend(pixels.shape[0], channels, height, width, pixels.device)
    for part in tiles(height, width, tile, overlap, margin):
        x = encoder.conv_in(part.computed(pixels, factor))
        for block in encoder.down_blocks:
            x = block(x)
        features.add(x, part, 1, overlap)
    # whole, as untiled, and in the input's memory layout: the layout picks the convolution kernels
    h = encoder.mid_block(features.result().to(pixels.dtype, memory_format=layout_of(pixels)))
    h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h)))
    return vae.quant_conv(h) if vae.quant_conv is not None else h

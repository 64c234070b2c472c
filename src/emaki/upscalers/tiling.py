"""Tiled upscaling: a model runs over overlapping tiles whose seams are blended by linear ramps.

Along each side there are as many tiles as A1111's `images.split_grid` uses (the fewest of at
most `tile` pixels that overlap by at least `overlap`), the first and last flush with the
edges, the rest spread evenly. Unlike A1111, whose tiles stay `tile` pixels and so overlap by
whatever the spread leaves, every tile is shrunk to the one size that makes neighbours share
about `overlap` pixels: a 256-pixel side takes two tiles of 132, not two of 192 (264 pixels
computed for 256, not 384).

Each output tile is weighted by a 1-D ramp along each axis, rising across the overlap it
shares with the previous tile and falling across the one it shares with the next: over a
shared strip of width n the two weights are (i + ½)/n and (n − i − ½)/n, which add up to 1, so
a seam is a linear cross-fade and the rest of each tile is kept as the model made it. The
ramps are separable, so the normalising weight is the outer product of two 1-D sums and no
image-sized weight map is kept.

Memory: the model only ever sees one tile, so what it allocates is bounded by the tile size;
the output is accumulated in float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emaki.errors import ParamsError

DEFAULT_TILE = 192  # A1111's ESRGAN_tile
DEFAULT_OVERLAP = 8  # A1111's ESRGAN_tile_overlap

ImageModel = Callable[[torch.Tensor], torch.Tensor]


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 0:
        raise ParamsError(f"tile: expected 0 (no tiling) or a size in pixels, got {tile}")
    if overlap < 0 or (tile > 0 and overlap >= tile):
        raise ParamsError(f"overlap: expected 0 or more and less than the tile size ({tile}), got {overlap}")


def tile_layout(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """(tile size, where tiles start) along one side: A1111's number of tiles, each as small
    as lets neighbours overlap by `overlap` (at least; rounding may add a pixel).

    >>> tile_layout(500, 192, 8)
    (172, [0, 164, 328])
    >>> tile_layout(256, 192, 8)
    (132, [0, 124])
    >>> tile_layout(100, 192, 8)
    (100, [0])
    """
    if length <= tile:
        return length, [0]
    count = -(-(length - overlap) // (tile - overlap))  # ceil: A1111's count
    size = -(-(length + (count - 1) * overlap) // count)  # ceil; at most `tile`
    return size, [i * (length - size) // (count - 1) for i in range(count)]


def ramp_weights(starts: list[int], tile: int, scale: int) -> list[torch.Tensor]:
    """Each tile's 1-D weight at output resolution: linear ramps across the overlaps.

    >>> [w.tolist() for w in ramp_weights([0, 2], 4, 1)]
    [[1.0, 1.0, 0.75, 0.25], [0.25, 0.75, 1.0, 1.0]]
    """
    weights = []
    for k, start in enumerate(starts):
        weight = torch.ones(tile * scale)
        if k > 0:
            shared = (starts[k - 1] + tile - start) * scale
            weight[:shared] *= (torch.arange(shared) + 0.5) / shared
        if k + 1 < len(starts):
            shared = (start + tile - starts[k + 1]) * scale
            weight[tile * scale - shared:] *= ((torch.arange(shared) + 0.5) / shared).flip(0)
        weights.append(weight)
    return weights


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    if tile <= 0:
        return 1
    return len(tile_layout(width, tile, overlap)[1]) * len(tile_layout(height, tile, overlap)[1])


def upscale_tiled(model: ImageModel, image: torch.Tensor, scale: int, *, tile: int, overlap: int,
                  device: torch.device, dtype: torch.dtype,
                  on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """`model` over `image` ((1, C, H, W) float in [0, 1], on the CPU) in tiles; the result
    ((1, C, H·scale, W·scale), float32, CPU). `tile` 0 runs the whole image at once."""
    check_tiling(tile, overlap)
    _, channels, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        result = model(image.to(device, dtype)).float().cpu()
        if on_tile is not None:
            on_tile()
        return result
    (tile_h, ys), (tile_w, xs) = tile_layout(height, tile, overlap), tile_layout(width, tile, overlap)
    wys, wxs = ramp_weights(ys, tile_h, scale), ramp_weights(xs, tile_w, scale)
    out = torch.zeros(1, channels, height * scale, width * scale)
    total_y, total_x = torch.zeros(height * scale), torch.zeros(width * scale)
    for y, wy in zip(ys, wys):
        total_y[y * scale:(y + tile_h) * scale] += wy
    for x, wx in zip(xs, wxs):
        total_x[x * scale:(x + tile_w) * scale] += wx
    for y, wy in zip(ys, wys):
        for x, wx in zip(xs, wxs):
            piece = model(image[:, :, y:y + tile_h, x:x + tile_w].to(device, dtype)).float().cpu()
            out[:, :, y * scale:(y + tile_h) * scale, x * scale:(x + tile_w) * scale] += piece * (wy[:, None] * wx[None, :])
            if on_tile is not None:
                on_tile()
    return out.div_(total_y[:, None] * total_x[None, :])

"""SD upscale: A1111 v1.10's img2img script "SD upscale" (`scripts/sd_upscale.py`).

    picture → upscaler × scale_factor
            → tiles of width×height overlapping by `overlap` (A1111's `images.split_grid`)
            → img2img of each tile at width×height (tile k of pass n: seed + n + k // batch_size + k % batch_size)
            → tiles laid back (`images.combine_grid`: over each tile's first `overlap` pixels a
              linear ramp from the earlier tiles to this one, left to right, then rows top to bottom)

One picture per `n_iter`; its infotext is the first tile's with `SD upscale overlap` and
`SD upscale upscaler` added, as A1111 writes it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from emaki.engine.output import save_png
from emaki.engine.pipeline import resolve_seeds
from emaki.engine.run import Cancel, GeneratedImage, GenerationResult, ProgressCallback
from emaki.errors import EmakiError, ParamsError
from emaki.infotext import quote
from emaki.models.loader import LoadedModel
from emaki.params import GenerationParams

if TYPE_CHECKING:
    from emaki.engine.engine import Engine

DEFAULT_TILE_SIZE = 512  # A1111's width and height when a request leaves them out
DEFAULT_OVERLAP = 64  # A1111's "Tile overlap" slider


@dataclass
class TileRow:
    y: int
    tiles: list[tuple[int, Image.Image]] = field(default_factory=list)  # (x, tile)


@dataclass
class TileGrid:
    """A picture cut into overlapping tiles (A1111's `Grid`)."""

    rows: list[TileRow]
    tile_width: int
    tile_height: int
    width: int
    height: int
    overlap: int

    def tiles(self) -> list[Image.Image]:
        return [tile for row in self.rows for _, tile in row.tiles]

    def replaced(self, tiles: list[Image.Image]) -> TileGrid:
        """The same layout with `tiles` (in reading order) in place of the cut ones."""
        pieces = iter(tiles)
        rows = [TileRow(row.y, [(x, next(pieces)) for x, _ in row.tiles]) for row in self.rows]
        return TileGrid(rows, self.tile_width, self.tile_height, self.width, self.height, self.overlap)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along one side: as few as cover it with `overlap` between neighbours,
    spread evenly, the last flush with the end (one tile when the side is no longer than it).

    >>> tile_starts(1024, 512, 64)
    [0, 256, 512]
    >>> tile_starts(512, 512, 64)
    [0]
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [min(int(i * step), length - tile) for i in range(count)]


def check_overlap(overlap: int, tile_width: int, tile_height: int) -> None:
    if not 0 <= overlap < min(tile_width, tile_height):
        raise ParamsError(f"script_args: the tile overlap must be at least 0 and less than the tile size "
                          f"({tile_width}x{tile_height}), got {overlap}")


def split_grid(image: Image.Image, tile_width: int, tile_height: int, overlap: int) -> TileGrid:
    """`image` cut into tiles of `tile_width`×`tile_height` (a picture smaller than a tile is
    padded with black, as a crop past its edge is)."""
    check_overlap(overlap, tile_width, tile_height)
    rows = []
    for y in tile_starts(image.height, tile_height, overlap):
        row = TileRow(y)
        for x in tile_starts(image.width, tile_width, overlap):
            row.tiles.append((x, image.crop((x, y, x + tile_width, y + tile_height))))
        rows.append(row)
    return TileGrid(rows, tile_width, tile_height, image.width, image.height, overlap)


def _ramp(overlap: int, across: int, horizontal: bool) -> Image.Image:
    """A paste mask rising from 0 to (almost) 255 over `overlap` pixels (A1111's `r * 255 / overlap`)."""
    ramp = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    array = np.tile(ramp, (across, 1)) if horizontal else np.tile(ramp[:, None], (1, across))
    return Image.fromarray(array, "L")


def _paste_blended(canvas: Image.Image, piece: Image.Image, x: int, y: int, overlap: int, horizontal: bool) -> None:
    """`piece` pasted at (x, y), its first `overlap` columns (or rows) faded in over what is there."""
    if overlap == 0:
        canvas.paste(piece, (x, y))
        return
    if horizontal:
        canvas.paste(piece.crop((0, 0, overlap, piece.height)), (x, y), _ramp(overlap, piece.height, True))
        canvas.paste(piece.crop((overlap, 0, piece.width, piece.height)), (x + overlap, y))
    else:
        canvas.paste(piece.crop((0, 0, piece.width, overlap)), (x, y), _ramp(overlap, piece.width, False))
        canvas.paste(piece.crop((0, overlap, piece.width, piece.height)), (x, y + overlap))


def combine_grid(grid: TileGrid) -> Image.Image:
    """The tiles laid back into one picture of the grid's size, seams blended."""
    combined = Image.new("RGB", (grid.width, grid.height))
    for row in grid.rows:
        strip = Image.new("RGB", (grid.width, grid.tile_height))
        for x, tile in row.tiles:
            _paste_blended(strip, tile.convert("RGB"), x, 0, grid.overlap if x > 0 else 0, horizontal=True)
        _paste_blended(combined, strip, 0, row.y, grid.overlap if row.y > 0 else 0, horizontal=False)
    return combined


def tile_seed(start: int, index: int, batch_size: int) -> int:
    """The seed tile `index` gets: A1111 runs the tiles `batch_size` at a time, each batch from
    the previous batch's first seed + 1."""
    return start + index // batch_size + index % batch_size


def with_script_fields(infotext: str, overlap: int, upscaler: str) -> str:
    """The tile's infotext with A1111's two SD upscale fields (before `Version`, where its extra
    generation parameters go)."""
    extra = f"SD upscale overlap: {overlap}, SD upscale upscaler: {quote(upscaler)}"
    head, sep, version = infotext.rpartition(", Version: ")
    if sep and "\n" not in version:
        return f"{head}, {extra}{sep}{version}"
    return f"{infotext}, {extra}"


def _tile_progress(progress: ProgressCallback | None, tile: int, tiles: int) -> ProgressCallback | None:
    """Progress of one tile's img2img as tile `tile` of `tiles` (A1111 counts the SD upscale
    script's tiles as its jobs): `batch`/`batches` number the tiles of the whole run."""
    if progress is None:
        return None
    return lambda event: progress(replace(event, batch=tile, batches=tiles))


def _picture(params: GenerationParams, grid: TileGrid, redrawn: list[Image.Image], seed: int, infotext: str,
             overlap: int, upscaler: str, folder: Path | None) -> GeneratedImage:
    """One pass's picture: the redrawn tiles (in reading order; the tiles not redrawn yet keep
    the upscaled picture's pixels) laid back, saved to `folder` unless it is None."""
    tiles = grid.tiles()
    combined = combine_grid(grid.replaced(redrawn + tiles[len(redrawn):]))
    text = with_script_fields(infotext, overlap, upscaler)
    path = save_png(combined, text, folder, seed) if folder is not None else None
    return GeneratedImage(combined, seed, params.subseed, text, path, prompt=params.prompt,
                          negative_prompt=params.negative_prompt)


def sd_upscale(engine: Engine, params: GenerationParams, image: Image.Image, *, upscaler: str,
               scale: float, overlap: int = DEFAULT_OVERLAP, progress: ProgressCallback | None = None,
               cancel: Cancel | None = None, out_dir: Path | None = None) -> GenerationResult:
    """`image` enlarged by `scale` with `upscaler` ("None": not enlarged), then redrawn tile by
    tile by img2img with `params` (prompt, steps, denoising strength, ...; width×height is the
    tile size); the pictures are written to `out_dir` unless it is None. `progress` counts the
    tiles of all passes as batches. A skipped tile keeps the upscaled pixels; an interrupt
    raises `Interrupted` whose `result` holds the pictures so far, the last one with the tiles
    finished before it (A1111 returns its partial picture too; its missing tiles are black)."""
    if params.mask:
        raise ParamsError("mask: the SD upscale script redraws the whole picture; send no mask")
    params = resolve_seeds(params)
    tile_width, tile_height = params.width or DEFAULT_TILE_SIZE, params.height or DEFAULT_TILE_SIZE
    check_overlap(overlap, tile_width, tile_height)
    picture = image.convert("RGB")
    if upscaler != "None":
        picture = engine.upscale(picture, upscaler, scale)
    grid = split_grid(picture, tile_width, tile_height, overlap)
    tiles = grid.tiles()
    images: list[GeneratedImage] = []
    model: LoadedModel | None = None  # the tiles' model, once one is redrawn
    infotext = ""  # the first redrawn tile's, as A1111 writes it
    with tempfile.TemporaryDirectory(prefix="emaki-sd-upscale-") as folder:
        for n in range(params.n_iter):
            redrawn: list[Image.Image] = []
            seed = params.seed + n
            try:
                for index, tile in enumerate(tiles):
                    path = Path(folder) / f"tile-{index}.png"
                    tile.save(path, format="PNG")
                    tile_params = params.updated(init_image=str(path), width=tile_width, height=tile_height,
                                                 seed=tile_seed(seed, index, params.batch_size),
                                                 batch_size=1, n_iter=1)
                    on_tile = _tile_progress(progress, n * len(tiles) + index, params.n_iter * len(tiles))
                    made = engine.generate(tile_params, progress=on_tile, cancel=cancel, save=False)
                    model = made.model
                    infotext = infotext or (made.images[0].infotext if made.images else "")
                    redrawn.append(made.images[0].image if made.images else tile)  # skipped: kept as upscaled
            except EmakiError as error:  # interrupted (or failing) midway: what was redrawn is kept
                if any(new is not old for new, old in zip(redrawn, tiles)):
                    images.append(_picture(params, grid, redrawn, seed, infotext, overlap, upscaler, out_dir))
                if model is not None:
                    error.result = GenerationResult(params, model, images)  # type: ignore[attr-defined]
                raise
            if any(new is not old for new, old in zip(redrawn, tiles)):  # every tile skipped: no picture
                images.append(_picture(params, grid, redrawn, seed, infotext, overlap, upscaler, out_dir))
    assert model is not None  # at least one tile was run
    return GenerationResult(params, model, images)

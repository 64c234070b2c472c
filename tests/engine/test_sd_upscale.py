"""The SD upscale script's tiling (A1111's `images.split_grid` / `combine_grid` semantics) and
its seeds, without a model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emaki.engine.sd_upscale import (
    combine_grid,
    split_grid,
    tile_seed,
    tile_starts,
    with_script_fields,
)
from emaki.errors import ParamsError


def noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_tiles_cover_the_picture_evenly_the_last_flush_with_the_end() -> None:
    assert tile_starts(1024, 512, 64) == [0, 256, 512]
    assert tile_starts(128, 64, 16) == [0, 32, 64]
    assert tile_starts(100, 64, 0) == [0, 36]
    grid = split_grid(noise(128, 96), 64, 64, 16)
    assert [row.y for row in grid.rows] == [0, 32] and [x for x, _ in grid.rows[0].tiles] == [0, 32, 64]
    assert all(tile.size == (64, 64) for tile in grid.tiles())


@pytest.mark.parametrize("overlap", [0, 16, 48])
def test_unchanged_tiles_combine_into_the_same_picture(overlap: int) -> None:
    picture = noise(150, 110)
    assert np.array_equal(np.asarray(combine_grid(split_grid(picture, 64, 64, overlap))), np.asarray(picture))


def test_seams_fade_from_the_earlier_tile_to_the_later_one() -> None:
    grid = split_grid(Image.new("RGB", (112, 64)), 64, 64, 16)  # tiles at x 0 and 48
    black, white = Image.new("RGB", (64, 64), "black"), Image.new("RGB", (64, 64), "white")
    row = np.asarray(combine_grid(grid.replaced([black, white])))[0, :, 0]
    assert (row[:48] == 0).all() and (row[64:] == 255).all()
    assert (np.diff(row[48:64].astype(int)) > 0).all()  # a ramp over the overlap


def test_overlap_must_be_smaller_than_a_tile() -> None:
    with pytest.raises(ParamsError, match="overlap"):
        split_grid(noise(128, 128), 64, 64, 64)


def test_seeds_and_infotext_follow_a1111() -> None:
    assert [tile_seed(10, k, 1) for k in range(4)] == [10, 11, 12, 13]
    assert [tile_seed(10, k, 2) for k in range(4)] == [10, 11, 11, 12]
    text = with_script_fields("1girl\nSteps: 2, Seed: 3, Version: emaki 0.1.0", 64, "Lanczos")
    assert text == "1girl\nSteps: 2, Seed: 3, SD upscale overlap: 64, SD upscale upscaler: Lanczos, Version: emaki 0.1.0"

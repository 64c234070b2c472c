"""The grid picture, laid out as A1111 lays it (`modules/images.py`: `image_grid`,
`draw_grid_annotations`; `scripts/xyz_grid.py`: `draw_xyz_grid`).

Each Z value's cells make an X-by-Y sub-grid with the X values over the columns and the Y values
left of the rows; the sub-grids stand side by side under their Z titles. Text is PIL's own font
(`ImageFont.load_default`), sized as A1111 sizes it: (cell width + cell height) / 25 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
#: Below this the labels of small cells (the 64x64 demo model's) are unreadable.
MIN_FONT_SIZE = 10

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def image_grid(images: Sequence[Image.Image], rows: int) -> Image.Image:
    """`images` in `rows` rows, left to right then top to bottom; every tile the size of the
    largest image, a smaller one centred in its tile."""
    cols = math.ceil(len(images) / rows)
    tile_w = max(image.width for image in images)
    tile_h = max(image.height for image in images)
    grid = Image.new("RGB", (cols * tile_w, rows * tile_h), BACKGROUND)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), (i % cols * tile_w + (tile_w - image.width) // 2,
                                          i // cols * tile_h + (tile_h - image.height) // 2))
    return grid


def auto_rows(count: int) -> int:
    """A1111's rows for a batch's own grid (`n_rows` -1): the square root, rounded.

    >>> auto_rows(1), auto_rows(2), auto_rows(4), auto_rows(6)
    (1, 1, 2, 2)
    """
    return max(1, round(math.sqrt(count)))


def font_of(tile_w: int, tile_h: int) -> Font:
    return ImageFont.load_default(max(MIN_FONT_SIZE, (tile_w + tile_h) // 25))


def wrap(text: str, font: Font, width: float) -> list[str]:
    """Words put on lines no wider than `width` (a longer word keeps a line of its own)."""
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if font.getlength(line) <= width or not lines[-1]:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


@dataclass(frozen=True)
class _Block:
    """A label's wrapped lines and their heights."""

    lines: list[str]
    heights: list[int]
    spacing: int

    @property
    def height(self) -> int:
        if not any(self.lines):
            return 0
        return sum(self.heights) + self.spacing * (len(self.lines) - 1)

    def draw(self, drawing: ImageDraw.ImageDraw, font: Font, x: float, top: float) -> None:
        for line, height in zip(self.lines, self.heights):
            drawing.text((x, top + height / 2), line, font=font, fill=TEXT, anchor="mm")
            top += height + self.spacing


def _block(text: str, font: Font, width: float, spacing: int) -> _Block:
    lines = wrap(text, font, width)
    heights = []
    for line in lines:
        box = font.getbbox(line) if line else (0, 0, 0, 0)
        heights.append(int(box[3] - box[1]))
    return _Block(lines, heights, spacing)


def draw_annotations(grid: Image.Image, tile_w: int, tile_h: int, columns: Sequence[str], rows: Sequence[str],
                     margin: int = 0) -> Image.Image:
    """`grid` (tiles of `tile_w` x `tile_h`) with a header band naming its columns and, when any
    row label is given, a band left of it naming its rows; `margin` pixels between the tiles."""
    cols, row_count = grid.width // tile_w, grid.height // tile_h
    if len(columns) != cols or len(rows) != row_count:
        raise ValueError(f"{len(columns)}x{len(rows)} labels for a {cols}x{row_count} grid")
    font = font_of(tile_w, tile_h)
    spacing = int(font.size) // 2 if isinstance(font, ImageFont.FreeTypeFont) else 5
    pad_left = tile_w * 3 // 4 if any(rows) else 0
    column_blocks = [_block(text, font, tile_w, spacing) for text in columns]
    row_blocks = [_block(text, font, pad_left, spacing) for text in rows]
    tallest = max(block.height for block in column_blocks)
    pad_top = tallest + spacing * 2 if tallest else 0
    result = Image.new("RGB", (grid.width + pad_left + margin * (cols - 1),
                               grid.height + pad_top + margin * (row_count - 1)), BACKGROUND)
    for row in range(row_count):
        for col in range(cols):
            tile = grid.crop((tile_w * col, tile_h * row, tile_w * (col + 1), tile_h * (row + 1)))
            result.paste(tile, (pad_left + (tile_w + margin) * col, pad_top + (tile_h + margin) * row))
    drawing = ImageDraw.Draw(result)
    for col, block in enumerate(column_blocks):
        block.draw(drawing, font, pad_left + (tile_w + margin) * col + tile_w / 2, pad_top / 2 - block.height / 2)
    for row, block in enumerate(row_blocks):
        block.draw(drawing, font, pad_left / 2, pad_top + (tile_h + margin) * row + tile_h / 2 - block.height / 2)
    return result


def cell_picture(images: Sequence[Image.Image]) -> Image.Image:
    """What a cell shows: its image, or the grid of its images when it made several (A1111
    returns a batch's grid first)."""
    return images[0] if len(images) == 1 else image_grid(images, auto_rows(len(images)))


def _in_tile(picture: Image.Image, tile: tuple[int, int]) -> Image.Image:
    """`picture` centred on a background of the tile's size (as `image_grid` places it)."""
    if picture.size == tile:
        return picture
    canvas = Image.new("RGB", tile, BACKGROUND)
    canvas.paste(picture.convert("RGB"), ((tile[0] - picture.width) // 2, (tile[1] - picture.height) // 2))
    return canvas


def draw_xyz_grid(cells: Sequence[Image.Image | None], shape: tuple[int, int, int], labels: tuple[
        Sequence[str], Sequence[str], Sequence[str]], *, draw_legend: bool = True,
                  margin: int = 0) -> tuple[Image.Image, list[Image.Image]]:
    """(The whole grid, the sub-grid of each Z value) from the cells' pictures in grid order
    (index ix + iy·X + iz·X·Y); a missing cell (not run, skipped) is black, as in A1111."""
    nx, ny, nz = shape
    present = [cell for cell in cells if cell is not None]
    if not present:
        raise ValueError("a grid needs at least one cell's picture")
    tile = (max(c.width for c in present), max(c.height for c in present))
    # Every picture in a tile of one size, so every sub-grid is cut the same (a Size axis on Z
    # would otherwise make sub-grids of other tile sizes).
    pictures = [_in_tile(cell, tile) if cell is not None else Image.new("RGB", tile) for cell in cells]
    x_labels, y_labels, z_labels = labels
    sub_grids = []
    for iz in range(nz):
        sub = image_grid(pictures[iz * nx * ny:(iz + 1) * nx * ny], rows=ny)
        if draw_legend or margin:
            sub = draw_annotations(sub, *tile, x_labels if draw_legend else [""] * nx,
                                   y_labels if draw_legend else [""] * ny, margin)
        sub_grids.append(sub)
    whole = image_grid(sub_grids, rows=1)
    if draw_legend:
        whole = draw_annotations(whole, sub_grids[0].width, sub_grids[0].height, z_labels, [""])
    return whole, sub_grids

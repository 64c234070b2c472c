"""Running a grid: every cell through `Engine.generate` — a normal image with its own infotext,
written like any generation — then the grid picture, written next to the cells with the grid
infotext A1111 writes (`Script: X/Y/Z plot`, `X Type`, `X Values`, ...).

An interrupt (`Cancel.interrupt`) keeps the cells finished so far and writes the partial grid
(cells not made are black); `Interrupted` is raised with the `GridResult` as its `result`, as
`Engine.generate` does with its images. `Cancel.skip` drops the cell being made.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from emaki.engine.output import dated_folder, save_numbered_png
from emaki.engine.run import Cancel, GeneratedImage, GenerationProgress
from emaki.errors import EmakiError, Interrupted
from emaki.infotext import quote
from emaki.params import GenerationParams
from emaki.xyz.grid import cell_picture, draw_xyz_grid
from emaki.xyz.plan import SEED_AXES, Cell, GridPlan, plan_grid
from emaki.xyz.spec import GridSpec

if TYPE_CHECKING:
    from emaki.engine.engine import Engine

SCRIPT_TITLE = "X/Y/Z plot"
GRID_BASENAME = "xyz_grid"  # A1111 names the files xyz_grid-0000-<seed>.png
_GRID_FILE = re.compile(rf"^{GRID_BASENAME}-(\d+)")


@dataclass(frozen=True)
class GridProgress:
    """Where a grid is: cell `cell` of `cells` (counted in the order they run), its axis labels,
    and the step of its generation (None as the cell starts)."""

    cell: int
    cells: int
    labels: tuple[str, str, str]
    generation: GenerationProgress | None = None


GridProgressCallback = Callable[[GridProgress], None]


@dataclass
class GridImage:
    """A grid picture with its infotext, and its file once written."""

    image: Image.Image
    infotext: str
    path: Path | None = None


@dataclass
class GridCell:
    """A cell as run: its place and params, and the images it made (none: not run, skipped)."""

    cell: Cell
    labels: tuple[str, str, str]
    images: list[GeneratedImage] = field(default_factory=list)


@dataclass
class GridResult:
    plan: GridPlan
    grid: GridImage  # the whole grid: the Z sub-grids side by side, with their titles
    sub_grids: list[GridImage]  # one X/Y grid per Z value (written when `include_sub_grids`)
    cells: list[GridCell]  # in grid order: index ix + iy·X + iz·X·Y
    interrupted: bool = False

    @property
    def images(self) -> list[GridImage | GeneratedImage]:
        """What A1111's X/Y/Z plot returns: the grid, then the sub-grids (`include_sub_grids`),
        then every cell's images (`include_lone_images`)."""
        spec = self.plan.spec
        found: list[GridImage | GeneratedImage] = [self.grid]
        if spec.include_sub_grids:
            found += self.sub_grids
        if spec.include_lone_images:
            found += [image for cell in self.cells for image in cell.images]
        return found


def grid_fields(plan: GridPlan, *, with_z: bool) -> dict[str, str]:
    """The fields A1111 adds to a grid's infotext: the whole grid's name all three axes, a Z
    value's sub-grid only X and Y. Seeds drawn for -1 are recorded as `Fixed X Values`."""
    fields = {"Script": SCRIPT_TITLE}
    for axis in plan.axes if with_z else plan.axes[:2]:
        if axis.is_nothing:
            continue
        fields[f"{axis.name} Type"] = axis.label
        fields[f"{axis.name} Values"] = axis.text
        if axis.label in SEED_AXES and not plan.spec.no_fixed_seeds:
            fields[f"Fixed {axis.name} Values"] = ", ".join(str(value) for value in axis.values.values)
    return fields


def with_fields(infotext: str, fields: dict[str, str]) -> str:
    """`infotext` with `fields` added where A1111 adds a script's: last, before `Version`.

    >>> with_fields("1girl\\nSteps: 3, Seed: 1, Version: emaki 0.1.0", {"Script": "X/Y/Z plot", "X Values": "1, 2"})
    '1girl\\nSteps: 3, Seed: 1, Script: X/Y/Z plot, X Values: "1, 2", Version: emaki 0.1.0'
    """
    head, newline, last = infotext.rpartition("\n")
    added = ", ".join(f"{key}: {quote(value)}" for key, value in fields.items())
    before, found, version = last.rpartition(", Version: ")
    last = f"{before}, {added}{found}{version}" if found else f"{last}, {added}" if last else added
    return f"{head}{newline}{last}"


def _base_image(cells: list[GridCell], first: int, count: int) -> GeneratedImage | None:
    """The image a grid's infotext and file name come from: its first cell's (A1111's), else
    the first cell of its range that made one."""
    for cell in cells[first:first + count]:
        if cell.images:
            return cell.images[0]
    return None


def save_grid(image: Image.Image, infotext: str, folder: Path, seed: int) -> Path:
    """Save as `<folder>/xyz_grid-<nnnn>-<seed>.png` (A1111's grid names, numbered on from the
    grids already there); the name is claimed with a hard link, never over another file."""

    def first_number() -> int:
        numbers = [int(m[1]) for p in folder.glob(f"{GRID_BASENAME}-*.png") if (m := _GRID_FILE.match(p.name))]
        return max(numbers, default=-1) + 1

    try:
        return save_numbered_png(image, infotext, folder, first_number,
                                 lambda number: f"{GRID_BASENAME}-{number:04d}-{seed}.png")
    except OSError as e:
        raise EmakiError(f"could not write the grid to {folder}: {e}") from None


def _grid_image(image: Image.Image, base: GeneratedImage, fields: dict[str, str], folder: Path | None) -> GridImage:
    text = with_fields(base.infotext, fields)
    return GridImage(image, text, save_grid(image, text, folder, base.seed) if folder is not None else None)


def assemble(plan: GridPlan, made: dict[int, list[GeneratedImage]], folder: Path | None, *,
             interrupted: bool = False) -> GridResult:
    """The grid and sub-grids from the cells' images (`made`, by grid index); written to
    `folder` unless it is None (sub-grids only with `include_sub_grids` and several Z values)."""
    nx, ny, nz = plan.shape
    cells = [GridCell(cell, plan.labels(cell), made.get(cell.index, [])) for cell in
             sorted(plan.cells, key=lambda c: c.index)]
    pictures = [cell_picture([g.image for g in cell.images]) if cell.images else None for cell in cells]
    labels = (plan.axes[0].values.labels, plan.axes[1].values.labels, plan.axes[2].values.labels)
    whole, subs = draw_xyz_grid(pictures, plan.shape, labels, draw_legend=plan.spec.draw_legend,
                                margin=plan.spec.margin_size)
    base = _base_image(cells, 0, len(cells))
    assert base is not None  # the caller made sure a cell made an image
    grid = _grid_image(whole, base, grid_fields(plan, with_z=True), folder)
    sub_folder = folder if plan.spec.include_sub_grids and nz > 1 else None
    sub_grids = [_grid_image(sub, _base_image(cells, iz * nx * ny, nx * ny) or base, grid_fields(plan, with_z=False),
                             sub_folder) for iz, sub in enumerate(subs)]
    return GridResult(plan, grid, sub_grids, cells, interrupted)


def _reporter(progress: GridProgressCallback | None, number: int, count: int,
              labels: tuple[str, str, str]) -> Callable[[GenerationProgress], None] | None:
    if progress is None:
        return None

    def on_step(event: GenerationProgress) -> None:
        progress(GridProgress(number, count, labels, event))

    return on_step


def run_grid(engine: Engine, params: GenerationParams, spec: GridSpec, *,
             progress: GridProgressCallback | None = None, cancel: Cancel | None = None, save: bool = True,
             out_dir: Path | None = None) -> GridResult:
    """Run the X/Y/Z plot `spec` over `params` on `engine`: every cell checked (values, names,
    the prompt policy, the size cap) before the first runs, then each generated and written to
    `out_dir` (default `outputs/<date>`, unless `save` is False), the grid written beside them.
    `progress` hears of every cell and step; on an interrupt or a failing cell, the finished
    cells' partial grid is written and the error raised with the `GridResult` as its `result`."""
    plan = plan_grid(params, spec, engine.workspace)
    folder = (out_dir if out_dir is not None else dated_folder(engine.workspace.outputs)) if save else None
    made: dict[int, list[GeneratedImage]] = {}
    stopped: EmakiError | None = None
    for number, cell in enumerate(plan.cells, start=1):
        if cancel is not None and cancel.interrupt.is_set():
            stopped = Interrupted("interrupted")
            break
        labels = plan.labels(cell)
        if progress is not None:
            progress(GridProgress(number, len(plan.cells), labels))
        try:
            result = engine.generate(cell.params, progress=_reporter(progress, number, len(plan.cells), labels),
                                     cancel=cancel, save=save, out_dir=folder)
            made[cell.index] = result.images
        except EmakiError as error:  # the batches this cell finished are kept, written already
            partial = getattr(error, "result", None)
            made[cell.index] = list(partial.images) if partial is not None else []
            stopped = error
            break
    if not any(made.values()):
        raise stopped if stopped is not None else EmakiError("grid: no cell made an image (every cell was skipped)")
    grid = assemble(plan, made, folder, interrupted=isinstance(stopped, Interrupted))
    if stopped is not None:
        if isinstance(stopped, Interrupted):
            done = sum(1 for images in made.values() if images)
            where = f"; the partial grid is {grid.grid.path}" if grid.grid.path else ""
            stopped = Interrupted(f"grid interrupted after {done} of {len(plan.cells)} cells{where}")
        stopped.result = grid  # type: ignore[attr-defined]
        raise stopped
    return grid

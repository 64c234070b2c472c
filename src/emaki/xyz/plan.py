"""A grid planned before anything runs: every axis's values checked, seeds fixed, every cell's
params made and passed by the prompt policy, the cells put in the order they run.

A1111's order (`draw_xyz_grid`): Z outermost, then Y, then X — unless an axis costs more to
change (a checkpoint loads, a VAE loads), in which case the costliest is the outer loop and the
next costliest the middle one, so each checkpoint loads once.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from emaki.engine.image_prompts import ImagePrompt, workspace_run_prompts
from emaki.engine.pipeline import image_seeds
from emaki.engine.policy import ensure_params_allowed, prompt_pairs
from emaki.errors import ParamsError, PolicyViolation
from emaki.params import MAX_SEED, GenerationParams
from emaki.workspace import Workspace
from emaki.xyz.axes import NOTHING, AxisContext, AxisValues, axis_values, find_axis
from emaki.xyz.spec import AxisSpec, GridSpec

NAMES = ("X", "Y", "Z")
SEED_AXES = ("Seed", "Var. seed")
#: Cells without a size (the model's native size) count as SD 1.x's 512x512 against the cap.
ASSUMED_SIZE = 512


@dataclass(frozen=True)
class PlannedAxis:
    """One of X, Y, Z: its values, and the text they were given as (infotext's `X Values`)."""

    name: str  # "X", "Y" or "Z"
    values: AxisValues
    text: str

    @property
    def label(self) -> str:
        return self.values.axis.label

    @property
    def is_nothing(self) -> bool:
        return self.values.axis is NOTHING

    def __len__(self) -> int:
        return len(self.values.values)


@dataclass(frozen=True)
class Cell:
    """One picture of the grid: its place (`index` = ix + iy·X + iz·X·Y) and its params."""

    index: int
    ix: int
    iy: int
    iz: int
    params: GenerationParams


@dataclass(frozen=True)
class GridPlan:
    params: GenerationParams  # the grid's params, seeds fixed (unless `spec.no_fixed_seeds`)
    axes: tuple[PlannedAxis, PlannedAxis, PlannedAxis]
    cells: tuple[Cell, ...]  # in the order they run
    spec: GridSpec

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.axes
        return len(x), len(y), len(z)

    def labels(self, cell: Cell) -> tuple[str, str, str]:
        x, y, z = (axis.values.labels for axis in self.axes)
        return x[cell.ix], y[cell.iy], z[cell.iz]


def draw_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def loop_order(costs: tuple[float, float, float]) -> tuple[int, int, int]:
    """The axes (0 X, 1 Y, 2 Z) from outer to inner loop, as A1111 picks them: the strictly
    costliest outermost, Z-Y-X when none is.

    >>> loop_order((0.0, 0.0, 0.0)), loop_order((0.0, 1.0, 0.0)), loop_order((1.0, 0.0, 0.7))
    ((2, 1, 0), (1, 2, 0), (0, 2, 1))
    """
    x, y, z = costs
    first, second = 2, 1
    if x > y and x > z:
        first, second = 0, (1 if y > z else 2)
    elif y > x and y > z:
        first, second = 1, (0 if x > z else 2)
    elif z > x and z > y:
        first, second = 2, (0 if x > y else 1)
    third = 3 - first - second
    return first, second, third


def _plan_axis(name: str, spec: AxisSpec | None, context: AxisContext) -> PlannedAxis:
    if spec is None:
        return PlannedAxis(name, axis_values(NOTHING, [], context), "")
    try:
        axis = find_axis(spec.axis)
        planned = axis_values(axis, spec.texts(), context)
    except ParamsError as e:
        raise ParamsError(f"{name}: {e}") from None
    return PlannedAxis(name, planned, spec.text())


def _fix_seeds(axis: PlannedAxis) -> PlannedAxis:
    """-1 in a Seed or Var. seed axis becomes a seed drawn now, once for the whole grid."""
    if axis.label not in SEED_AXES:
        return axis
    values = [draw_seed() if value == -1 else value for value in axis.values.values]
    return PlannedAxis(axis.name, AxisValues(axis.values.axis, values, list(values)), axis.text)


def _described(axes: tuple[PlannedAxis, ...], place: tuple[int, int, int]) -> str:
    parts = [f"{axis.name} {axis.label} = {axis.values.values[i]!r}" for axis, i in zip(axes, place)
             if not axis.is_nothing]
    return ", ".join(parts) or "the only cell"


def _seed_offset(axes: tuple[PlannedAxis, ...], place: tuple[int, int, int], spec: GridSpec) -> int:
    x_dim = len(axes[0]) if spec.vary_seeds_x else 1
    y_dim = len(axes[1]) if spec.vary_seeds_y else 1
    return ((place[0] if spec.vary_seeds_x else 0) + (place[1] * x_dim if spec.vary_seeds_y else 0)
            + (place[2] * x_dim * y_dim if spec.vary_seeds_z else 0))


def _cell_params(plan_params: GenerationParams, axes: tuple[PlannedAxis, ...], place: tuple[int, int, int],
                 spec: GridSpec) -> GenerationParams:
    fields: dict[str, Any] = plan_params.model_dump()
    for axis, i in zip(axes, place):
        apply = axis.values.axis.apply
        assert apply is not None  # `find_axis` gives supported axes only
        apply(fields, axis.values.applied[i], axis.values.applied)
    if fields["seed"] != -1:  # A1111's "Vary seeds for X/Y/Z": the seed counts up along those axes
        fields["seed"] = (fields["seed"] + _seed_offset(axes, place, spec)) % (MAX_SEED + 1)
    try:
        return GenerationParams.create(**fields)
    except ParamsError as e:
        raise ParamsError(f"grid cell ({_described(axes, place)}): {e}") from None


def _pixels(params: GenerationParams) -> int:
    """What one cell's picture holds, in pixels, for the size cap."""
    from emaki.engine.hires import target_size

    sized = params.model_copy(update={"width": params.width or ASSUMED_SIZE,
                                      "height": params.height or ASSUMED_SIZE})
    width, height = target_size(sized) if sized.enable_hr else (sized.width, sized.height)
    assert width is not None and height is not None
    return width * height * params.batch_size * params.n_iter


def _check_size(pixels: int, count: int, spec: GridSpec) -> None:
    """A1111's `img_max_size_mp`: the grid's pixels, counted before anything runs."""
    megapixels = round(pixels / 1_000_000)
    if megapixels >= spec.max_size_mp:
        raise ParamsError(f"max_size_mp: the grid would be {megapixels} megapixels ({count} cells); the "
                          f"limit is {spec.max_size_mp} — use fewer values or smaller images")


def _size_axis_pixels(axes: tuple[PlannedAxis, ...], params: GenerationParams) -> list[int]:
    return [_pixels(params.model_copy(update={"width": w, "height": h})) for axis in axes if axis.label == "Size"
            for w, h in axis.values.applied]


def _judged_prompts(params: GenerationParams, workspace: Workspace | None) -> list[ImagePrompt] | None:
    """Each image's prompts as `Engine.generate` will judge them (styles applied, wildcards
    expanded from the image's seed) — known now when the seeds are; else the params' own."""
    if workspace is None or params.seed == -1 or params.subseed == -1:
        return None
    return workspace_run_prompts(params, image_seeds(params), workspace).images


def _check_policy(cells: list[Cell], axes: tuple[PlannedAxis, ...], workspace: Workspace | None) -> None:
    """Every cell's prompts through the prompt policy (each distinct text once), so a refused
    cell stops the grid before its first cell runs."""
    judged: set[tuple[Any, ...]] = set()
    for cell in cells:
        try:
            images = _judged_prompts(cell.params, workspace)
            key = (tuple(images) if images is not None else tuple(prompt_pairs(cell.params)), cell.params.cfg_scale)
            if key not in judged:
                judged.add(key)
                ensure_params_allowed(cell.params, images)
        except (PolicyViolation, ParamsError) as e:
            raise type(e)(f"grid cell ({_described(axes, (cell.ix, cell.iy, cell.iz))}): {e}") from None


def plan_grid(params: GenerationParams, spec: GridSpec, workspace: Workspace | None = None) -> GridPlan:
    """Check and plan the grid `spec` over `params`; raises `ParamsError` (naming the axis, the
    value or the cell) or `PolicyViolation` before anything runs. With a `workspace`, checkpoint,
    VAE and upscaler names are looked up in it, and each cell's prompts are judged with their
    styles and wildcards expanded, as `Engine.generate` will judge them."""
    context = AxisContext(params, workspace)
    axes = tuple(_plan_axis(name, axis, context) for name, axis in zip(NAMES, spec.axes()))
    if not spec.no_fixed_seeds:  # A1111's fix_seed: -1 drawn once, for every cell alike
        params = params.updated(seed=draw_seed() if params.seed == -1 else params.seed,
                                subseed=draw_seed() if params.subseed == -1 else params.subseed)
        axes = tuple(_fix_seeds(axis) for axis in axes)
    planned: tuple[PlannedAxis, PlannedAxis, PlannedAxis] = (axes[0], axes[1], axes[2])
    # Before the cells are made (an axis may hold 10,000 values): each cell at least as small as
    # the grid's params, or the smallest Size value.
    count = len(planned[0]) * len(planned[1]) * len(planned[2])
    _check_size(count * min([_pixels(params), *_size_axis_pixels(planned, params)]), count, spec)
    order = loop_order(tuple(axis.values.axis.cost for axis in planned))  # type: ignore[arg-type]
    cells = []
    for indices in itertools.product(*(range(len(planned[a])) for a in order)):
        place = [0, 0, 0]
        for a, i in zip(order, indices):
            place[a] = i
        ix, iy, iz = place
        nx, ny, _ = (len(axis) for axis in planned)
        cells.append(Cell(ix + iy * nx + iz * nx * ny, ix, iy, iz, _cell_params(params, planned, (ix, iy, iz), spec)))
    _check_size(sum(_pixels(cell.params) for cell in cells), count, spec)
    _check_policy(cells, planned, workspace)
    return GridPlan(params, planned, tuple(cells), spec)

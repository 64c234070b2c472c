"""The X/Y/Z plot (A1111's `scripts/xyz_grid.py`): one image per combination of up to three
axes' values, and the grid of them with legends.

    from emaki.xyz import GridSpec, run_grid
    spec = GridSpec.create(x="Sampler: Euler a, DPM++ 2M Karras", y="Steps: 10-30 (+10)")
    result = run_grid(engine, params, spec)          # or engine.grid(params, x=..., y=...)
    result.grid.path                                 # outputs/<date>/xyz_grid-0000-<seed>.png

`axes` (the axis table, A1111's numbering), `values` (value syntax), `spec` (the named form),
`plan` (checks and cell order), `grid` (the picture), `run` (running it). Names are imported on
first use: the axis table and the spec stay cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emaki.xyz.axes import AXES, Axis, a1111_axes, find_axis
    from emaki.xyz.plan import GridPlan, plan_grid
    from emaki.xyz.run import GridCell, GridImage, GridProgress, GridResult, run_grid
    from emaki.xyz.spec import AxisSpec, GridSpec

_EXPORTS = {
    "AXES": "emaki.xyz.axes",
    "Axis": "emaki.xyz.axes",
    "a1111_axes": "emaki.xyz.axes",
    "find_axis": "emaki.xyz.axes",
    "AxisSpec": "emaki.xyz.spec",
    "GridSpec": "emaki.xyz.spec",
    "GridPlan": "emaki.xyz.plan",
    "plan_grid": "emaki.xyz.plan",
    "GridCell": "emaki.xyz.run",
    "GridImage": "emaki.xyz.run",
    "GridProgress": "emaki.xyz.run",
    "GridResult": "emaki.xyz.run",
    "run_grid": "emaki.xyz.run",
}
__all__ = ["AXES", "Axis", "AxisSpec", "GridCell", "GridImage", "GridPlan", "GridProgress", "GridResult", "GridSpec",
           "a1111_axes", "find_axis", "plan_grid", "run_grid"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'emaki.xyz' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

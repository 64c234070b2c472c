"""The axes a grid can vary, described for a client: what `GET /api/grid/axes` answers and
`emaki grid --list-axes` prints.

Each axis is listed once (A1111's two "Sampler" rows, one per tab, are one axis here), with its
value kind — "number" (ranges such as `1-5` allowed), "text" or "choice" — and, for a choice, the
names it takes in this workspace (samplers, schedules, checkpoints, VAEs, styles, ...).
"""

from __future__ import annotations

from typing import Any, Literal

from emaki.workspace import Workspace
from emaki.xyz.axes import AXES, Axis

ValueKind = Literal["number", "text", "choice"]


def value_kind(axis: Axis) -> ValueKind:
    if axis.choices is not None:
        return "choice"
    return "number" if axis.kind in ("int", "float") else "text"


def axis_rows(workspace: Workspace | None) -> list[dict[str, Any]]:
    """One row per axis emaki runs, in A1111's order then emaki's own: `name` (the label the
    native API and `--x` take), `kind`, `choices` (for a choice), `type` (int, float, str or
    orders), `aliases`, `mode` (txt2img, img2img or both); `label` repeats `name`."""
    rows: dict[str, dict[str, Any]] = {}
    for axis in AXES:
        if not axis.supported:
            continue
        if axis.label in rows:  # A1111 lists "Sampler" once per tab: one axis for both
            rows[axis.label]["mode"] = "both"
            continue
        row: dict[str, Any] = {"name": axis.label, "label": axis.label, "kind": value_kind(axis), "type": axis.kind,
                               "aliases": list(axis.aliases), "mode": axis.mode}
        if axis.choices is not None:
            row["choices"] = axis.choices(workspace)
        rows[axis.label] = row
    return list(rows.values())

"""A1111's "X/Y/Z plot" script over its API: the positional `script_args` of `/sdapi/v1/txt2img`
and `/img2img` read into a `GridSpec`.

A1111 1.7 to 1.10.1 (`scripts/xyz_grid.py`, `Script.run`) takes 18 arguments:

    x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown,
    z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
    no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode

clients written for 1.6 send 15 (no `vary_seeds_*`), for 1.2 to 1.5 14 (no `csv_mode` either).
An axis type is an index into the tab's axis list (`emaki.xyz.axes.a1111_axes`, A1111 v1.10.1's
numbering whatever the count; an axis label is taken too). An axis with a closed set of values
(`Axis.choices`, A1111's dropdown) takes its values from `*_values_dropdown` unless `csv_mode`
is on, as in A1111 — or, when the dropdown is empty, from the text. An axis A1111 has and emaki
cannot run is refused naming it, never dropped.
"""

from __future__ import annotations

from typing import Any

from emaki.errors import ParamsError
from emaki.xyz.axes import NOTHING, Axis, a1111_axes
from emaki.xyz.spec import AxisSpec, GridSpec

XYZ_PLOT = "x/y/z plot"  # A1111 matches script titles ignoring case, and lists them lower-case
AXIS_ARGS = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown",
             "z_type", "z_values", "z_values_dropdown")
OPTION_ARGS = ("draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds")
VARY_ARGS = ("vary_seeds_x", "vary_seeds_y", "vary_seeds_z")
FULL_ARGS = (*AXIS_ARGS, *OPTION_ARGS, *VARY_ARGS, "margin_size", "csv_mode")  # A1111 1.7 to 1.10.1
CSV_ARGS = (*AXIS_ARGS, *OPTION_ARGS, "margin_size", "csv_mode")  # A1111 1.6
OLD_ARGS = (*AXIS_ARGS, *OPTION_ARGS, "margin_size")  # A1111 1.2 to 1.5


def named_args(args: list[Any]) -> dict[str, Any]:
    """The positional `script_args` by name; a count A1111 never sends is a `ParamsError`."""
    for names in (FULL_ARGS, CSV_ARGS, OLD_ARGS):
        if len(args) == len(names):
            return dict(zip(names, args, strict=True))
    raise ParamsError(f"script_args: the X/Y/Z plot takes {len(FULL_ARGS)} values (A1111 1.7 to 1.10.1: "
                      f"{', '.join(FULL_ARGS)}), {len(CSV_ARGS)} (1.6: without vary_seeds_x/y/z) or "
                      f"{len(OLD_ARGS)} (1.2 to 1.5: without csv_mode either), got {len(args)}")


def _axis_of(letter: str, index: Any, *, img2img: bool) -> Axis:
    """The axis `{letter}_type` names: an index into the tab's list (None or "" is A1111's 0,
    "Nothing"), or a label."""
    axes = a1111_axes(img2img)
    tab = "img2img" if img2img else "txt2img"
    if index is None or index == "":
        return NOTHING
    if isinstance(index, str):
        found = [axis for axis in axes if axis.label.lower() == index.strip().lower()]
        if found:
            return found[0]
    elif not isinstance(index, bool) and isinstance(index, int) and 0 <= index < len(axes):
        return axes[index]
    raise ParamsError(f"script_args: {letter}_type: expected an axis index 0-{len(axes) - 1} of A1111's "
                      f"{tab} X/Y/Z list (or its label), got {index!r:.40}")


def _axis(letter: str, named: dict[str, Any], *, img2img: bool, csv_mode: bool) -> AxisSpec | None:
    index = named[f"{letter}_type"]
    axis = _axis_of(letter, index, img2img=img2img)
    if axis is NOTHING:
        return None
    if not axis.supported:
        raise ParamsError(f"script_args: {letter}_type {index!r} is the axis {axis.label!r}: {axis.missing}")
    text, dropdown = named[f"{letter}_values"], named[f"{letter}_values_dropdown"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ParamsError(f"script_args: {letter}_values: expected text such as '1-5' or 'a, b', got {text!r:.60}")
    if dropdown is None or dropdown == "":  # clients that leave the dropdown out send null or ""
        dropdown = []
    if not isinstance(dropdown, list):
        raise ParamsError(f"script_args: {letter}_values_dropdown: expected a list, got {dropdown!r:.60}")
    # A1111 reads a dropdown axis's values from the dropdown unless csv_mode; a client that left
    # the dropdown empty and typed the values is taken at its word rather than refused.
    if not csv_mode and dropdown and (axis.choices is not None or not text.strip()):
        return AxisSpec(axis=axis.label, values=[str(value) for value in dropdown])
    return AxisSpec(axis=axis.label, values=text)


def _flag(value: Any) -> bool:
    """A checkbox's value: JSON clients send true/false, some "True"/"False" (which mean what they say)."""
    return value.strip().lower() in ("true", "1", "yes", "on") if isinstance(value, str) else bool(value)


def grid_spec(args: list[Any], *, img2img: bool) -> GridSpec:
    """A1111's X/Y/Z `script_args` as a `GridSpec`; a bad index, value or count is a
    `ParamsError` naming the argument."""
    named = named_args(args)
    csv_mode = _flag(named.get("csv_mode", False))
    fields: dict[str, Any] = {letter: _axis(letter, named, img2img=img2img, csv_mode=csv_mode) for letter in "xyz"}
    for name in (*OPTION_ARGS, *VARY_ARGS):
        if name in named:
            fields[name] = named[name]
    fields["margin_size"] = named["margin_size"]
    try:
        return GridSpec.create(**fields)
    except ParamsError as e:
        raise ParamsError(f"script_args: {e}") from None

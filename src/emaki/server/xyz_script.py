"""A1111's "X/Y/Z plot" script over its API: the positional `script_args` of `/sdapi/v1/txt2img`
and `/img2img` read into a `GridSpec`.

A1111 ≥ 1.7 (`scripts/xyz_grid.py`, `Script.run`) takes 18 arguments:

    x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown,
    z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
    no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode

older clients send 14 (no `vary_seeds_*`, no `csv_mode`). An axis type is an index into the
tab's axis list (`emaki.xyz.axes.a1111_axes`); an axis with a fixed set of choices takes its
values from `*_values_dropdown` unless `csv_mode` is on, as in A1111.
"""

from __future__ import annotations

from typing import Any

from emaki.errors import ParamsError
from emaki.xyz.axes import NOTHING, a1111_axes
from emaki.xyz.spec import AxisSpec, GridSpec

XYZ_PLOT = "x/y/z plot"  # A1111 matches script titles ignoring case, and lists them lower-case
AXIS_ARGS = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown",
             "z_type", "z_values", "z_values_dropdown")
OPTION_ARGS = ("draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds")
FULL_ARGS = (*AXIS_ARGS, *OPTION_ARGS, "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode")
OLD_ARGS = (*AXIS_ARGS, *OPTION_ARGS, "margin_size")
#: The axes A1111 shows as a dropdown (`AxisOption.choices`): their values come from `*_values_dropdown`.
CHOICE_AXES = frozenset({
    "Sampler", "Hires sampler", "Checkpoint name", "Schedule type", "Hires upscaler", "VAE", "Styles",
    "Face restore", "Always discard next-to-last sigma", "SGM noise multiplier", "Refiner checkpoint",
    "RNG source", "FP8 mode"})


def named_args(args: list[Any]) -> dict[str, Any]:
    """The positional `script_args` by name; a count A1111 never sends is a `ParamsError`."""
    for names in (FULL_ARGS, OLD_ARGS):
        if len(args) == len(names):
            return dict(zip(names, args, strict=True))
    raise ParamsError(f"script_args: the X/Y/Z plot takes {len(FULL_ARGS)} values (A1111 1.7 and later: "
                      f"{', '.join(FULL_ARGS)}) or {len(OLD_ARGS)} (older: without vary_seeds_x/y/z and "
                      f"csv_mode), got {len(args)}")


def _axis(letter: str, named: dict[str, Any], *, img2img: bool, csv_mode: bool) -> AxisSpec | None:
    axes = a1111_axes(img2img)
    tab = "img2img" if img2img else "txt2img"
    index = named[f"{letter}_type"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(axes):
        raise ParamsError(f"script_args: {letter}_type: expected an axis index 0-{len(axes) - 1} of A1111's "
                          f"{tab} X/Y/Z list, got {index!r:.40}")
    axis = axes[index]
    if axis is NOTHING:
        return None
    if not axis.supported:
        raise ParamsError(f"script_args: {letter}_type {index} is the axis {axis.label!r}: {axis.missing}")
    text, dropdown = named[f"{letter}_values"], named[f"{letter}_values_dropdown"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ParamsError(f"script_args: {letter}_values: expected text such as '1-5' or 'a, b', got {text!r:.60}")
    if dropdown is not None and not isinstance(dropdown, list):
        raise ParamsError(f"script_args: {letter}_values_dropdown: expected a list, got {dropdown!r:.60}")
    # A1111 reads a dropdown axis's values from the dropdown unless csv_mode; a client that left
    # the dropdown empty and typed the values is taken at its word rather than refused.
    if not csv_mode and dropdown and (axis.label in CHOICE_AXES or not text.strip()):
        return AxisSpec(axis=axis.label, values=[str(value) for value in dropdown])
    return AxisSpec(axis=axis.label, values=text)


def grid_spec(args: list[Any], *, img2img: bool) -> GridSpec:
    """A1111's X/Y/Z `script_args` as a `GridSpec`; a bad index, value or count is a
    `ParamsError` naming the argument."""
    named = named_args(args)
    csv_mode = bool(named.get("csv_mode", False))
    fields: dict[str, Any] = {letter: _axis(letter, named, img2img=img2img, csv_mode=csv_mode) for letter in "xyz"}
    for name in (*OPTION_ARGS, "vary_seeds_x", "vary_seeds_y", "vary_seeds_z"):
        if name in named:
            fields[name] = named[name]
    fields["margin_size"] = named["margin_size"]
    try:
        return GridSpec.create(**fields)
    except ParamsError as e:
        raise ParamsError(f"script_args: {e}") from None

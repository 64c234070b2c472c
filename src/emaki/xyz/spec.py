"""What a grid is asked for, by name: the native API's form of A1111's X/Y/Z plot options.

    {"x": {"axis": "Sampler", "values": ["Euler a", "DPM++ 2M Karras"]},
     "y": {"axis": "Steps", "values": "10-30 (+10)"},
     "draw_legend": true, "include_sub_grids": false, "margin_size": 0}

Field names follow the arguments of A1111's `Script.run` (`draw_legend`, `include_lone_images`,
`include_sub_grids`, `no_fixed_seeds`, `vary_seeds_x`, `margin_size`); `max_size_mp` is its
`img_max_size_mp` setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emaki.errors import ParamsError
from emaki.params import checked
from emaki.xyz.values import join_values, split_values


class AxisSpec(BaseModel):
    """One axis: `axis` is an axis label as A1111 shows it ("Sampler", "Steps", "CFG Scale",
    "Checkpoint name", "Prompt S/R", ... — `emaki.xyz.axes.AXES`), `values` either the text A1111's
    box takes ("10-30 (+10)", "Euler a, \\"DPM++ 2M, Karras\\"") or a list of values (each
    may still be a range)."""

    model_config = ConfigDict(extra="forbid")

    axis: str = Field(description="axis label, e.g. Sampler, Steps, CFG Scale, Checkpoint name, Prompt S/R")
    values: str | list[str | int | float] = Field(
        "", description='comma-separated text with CSV quoting and ranges ("1-5", "1-9 (+2)", "1-10 [5]"), '
                        "or a list")

    @classmethod
    def parse(cls, text: str, *, option: str = "axis") -> AxisSpec:
        """`"Sampler: Euler a, DPM++ 2M Karras"` (the CLI's `--x`): the label, a colon, the values.

        >>> AxisSpec.parse("Steps: 10-30 (+10)")
        AxisSpec(axis='Steps', values='10-30 (+10)')
        """
        label, colon, values = text.partition(":")
        if not colon and label.strip().lower() != "nothing":
            raise ParamsError(f"{option}: expected 'AXIS: VALUES' such as 'Steps: 10-30 (+10)', got {text!r}")
        return cls(axis=label.strip(), values=values.strip())

    def texts(self) -> list[str]:
        """The values, split (a list's items each one value)."""
        if isinstance(self.values, str):
            return split_values(self.values)
        # A JSON client's 20.0 is 20 to a whole-number axis.
        return [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip() for v in self.values]

    def text(self) -> str:
        """The values as infotext's `X Values` records them: as typed, or a list as one CSV line."""
        return self.values if isinstance(self.values, str) else join_values(self.values)


class GridSpec(BaseModel):
    """A whole X/Y/Z plot: up to three axes (a missing one is A1111's "Nothing") and A1111's
    options with its defaults."""

    model_config = ConfigDict(extra="forbid")

    x: AxisSpec | None = None
    y: AxisSpec | None = None
    z: AxisSpec | None = None
    draw_legend: bool = Field(True, description="column and row headers, and titles over the Z sub-grids")
    include_lone_images: bool = Field(False, description="the result lists every cell's image after the grids")
    include_sub_grids: bool = Field(False, description="each Z value's X/Y grid is also written on its own")
    no_fixed_seeds: bool = Field(False, description="keep seed -1: every cell draws its own random seed")
    vary_seeds_x: bool = Field(False, description="the seed grows by 1 along X (A1111's 'Vary seeds for X')")
    vary_seeds_y: bool = False
    vary_seeds_z: bool = False
    margin_size: int = Field(0, ge=0, le=500, description="pixels between the cells (A1111's 'Grid margins')")
    max_size_mp: int = Field(200, ge=1, description="the largest grid, in megapixels (A1111's img_max_size_mp)")

    @field_validator("x", "y", "z", mode="before")
    @classmethod
    def _axis_text(cls, value: Any) -> Any:
        """An axis may be given as the CLI writes it: "Steps: 10-30 (+10)"."""
        return AxisSpec.parse(value) if isinstance(value, str) else value

    @classmethod
    def create(cls, **fields: Any) -> GridSpec:
        """Validate `fields`; a bad one raises `ParamsError` naming it and what was expected."""
        return checked(cls, fields)

    def axes(self) -> tuple[AxisSpec | None, AxisSpec | None, AxisSpec | None]:
        return self.x, self.y, self.z

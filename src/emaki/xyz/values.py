"""An axis's values as A1111's X/Y/Z plot reads them (`scripts/xyz_grid.py`, `process_axis`).

Values are comma-separated, with CSV quoting for a value that holds a comma; numeric axes also
take ranges, negative numbers included:

>>> split_values('Euler a, "DPM++ 2M, Karras", DDIM')
['Euler a', 'DPM++ 2M, Karras', 'DDIM']
>>> expand_ints(["1-5", "10-30 (+10)", "1-10 [4]", "-3--1"])
[1, 2, 3, 4, 5, 10, 20, 30, 1, 4, 7, 10, -3, -2, -1]
>>> expand_floats(["0.5-1.5 (+0.5)", "1-2 [3]", "7"])
[0.5, 1.0, 1.5, 1.0, 1.5, 2.0, 7.0]

A range without a step counts by 1 towards its end (`5-3` is 5, 4, 3; A1111 makes that an empty
axis); a step that points away from the end is an error rather than an empty axis.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence

import numpy as np

from emaki.errors import ParamsError

#: The most values one axis may hold: a range such as `1-100000000` is refused before it is made.
MAX_VALUES = 10_000

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
# `start-end`, `start-end (+step)`, `start-end [count]` (A1111's re_range / re_range_count).
_INT_STEP = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*({_INT})\s*\))?\s*")
_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
_FLOAT_STEP = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*({_FLOAT})\s*\))?\s*")
_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")

def split_values(text: str) -> list[str]:
    """Comma-separated values, CSV quoting allowed, each stripped (A1111's
    `csv_string_to_list_strip`); a line break separates values too."""
    try:
        rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    except csv.Error as e:
        raise ParamsError(f"values {text!r}: {e}") from None
    return [value.strip() for row in rows for value in row]


def join_values(values: Sequence[object]) -> str:
    """The values as one CSV line (A1111's `list_to_csv_string`), quoting those that need it.

    >>> join_values(["Euler a", "DPM++ 2M, Karras"])
    'Euler a,"DPM++ 2M, Karras"'
    """
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().strip()


def _number(text: str) -> float:
    return float(re.sub(r"\s+", "", text))  # "- 5" is -5


def _checked_count(value: str, count: int) -> None:
    if count > MAX_VALUES:
        raise ParamsError(f"{value!r} makes {count} values; an axis holds at most {MAX_VALUES}")


def _step_range(value: str, start: float, end: float, step: float | None) -> list[float]:
    """start, start+step, ... up to and including `end` when a step lands on it."""
    if step is None:
        step = 1.0 if end >= start else -1.0
    if step == 0 or (end - start) * step < 0:
        raise ParamsError(f"{value!r}: a step of {step:g} never goes from {start:g} to {end:g}")
    count = math.floor((end - start) / step + 1e-9) + 1
    _checked_count(value, count)
    # Rounded: 0.1 + 2 * 0.1 is 0.30000000000000004, which would show in labels and infotexts.
    return [round(start + i * step, 10) for i in range(count)]


def _count_range(value: str, start: float, end: float, count: int) -> list[float]:
    if count < 1:
        raise ParamsError(f"{value!r}: the count in [...] must be at least 1")
    _checked_count(value, count)
    return [float(v) for v in np.linspace(start, end, count)]


def expand_ints(values: Sequence[str]) -> list[int]:
    """Whole numbers, `a-b` ranges (`(+step)` or `[count]`) expanded; a value that is not a
    whole number is a `ParamsError` naming it."""
    out: list[int] = []
    for value in values:
        if (m := _INT_STEP.fullmatch(value)) is not None:
            step = _number(m[3]) if m[3] is not None else None
            out += [int(v) for v in _step_range(value, _number(m[1]), _number(m[2]), step)]
        elif (m := _INT_COUNT.fullmatch(value)) is not None:
            # As A1111: evenly spaced, then truncated towards zero (1-10 [4] is 1, 4, 7, 10).
            out += [int(v) for v in _count_range(value, _number(m[1]), _number(m[2]), int(m[3]))]
        else:
            try:
                out.append(int(value))
            except ValueError:
                raise ParamsError(f"{value!r} is not a whole number or a range such as 1-5, 1-9 (+2), "
                                  "1-10 [5]") from None
        _checked_count(value, len(out))
    return out


def expand_floats(values: Sequence[str]) -> list[float]:
    """Numbers, `a-b` ranges (`(+step)` or `[count]`) expanded; a value that is not a number is
    a `ParamsError` naming it."""
    out: list[float] = []
    for value in values:
        if (m := _FLOAT_STEP.fullmatch(value)) is not None:
            step = _number(m[3]) if m[3] is not None else None
            out += _step_range(value, _number(m[1]), _number(m[2]), step)
        elif (m := _FLOAT_COUNT.fullmatch(value)) is not None:
            out += _count_range(value, _number(m[1]), _number(m[2]), int(m[3]))
        else:
            try:
                number = float(value)
            except ValueError:
                raise ParamsError(f"{value!r} is not a number or a range such as 0.5-1.5 (+0.25), "
                                  "1-10 [5]") from None
            if not math.isfinite(number):
                raise ParamsError(f"{value!r} is not a finite number")
            out.append(number)
        _checked_count(value, len(out))
    return out

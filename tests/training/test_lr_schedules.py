"""Learning-rate schedules, and A1111's "rate:step, rate:step, rate" strings."""

from __future__ import annotations

import math

import pytest

from emaki.errors import EmakiError, ParamsError
from emaki.training import (
    LRScheduleError,
    constant,
    cosine,
    linear_decay,
    parse_lr_schedule,
    warmup,
)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("0.005", ((0.005, None),)),
        ("  5e-3 ", ((0.005, None),)),
        ("5e-3:100, 1e-3:1000, 1e-5", ((0.005, 100), (0.001, 1000), (1e-05, None))),
        ("0.001:100,0.00001:1000,1e-5:10000", ((0.001, 100), (1e-05, 1000), (1e-05, 10000))),
        ("1e-3:500, 1e-4:-1", ((0.001, 500), (0.0001, None))),
        ("1e-3:500, , 1e-4,", ((0.001, 500), (0.0001, None))),  # A1111 skips empty pieces
    ],
)
def test_parse_a1111_strings(text: str, pieces: tuple[tuple[float, int | None], ...]) -> None:
    assert parse_lr_schedule(text).pieces == pieces


def test_rate_holds_until_the_step_after_it() -> None:
    # As A1111's LearnRateScheduler: "rate:N" is used for step indices 0..N-1.
    s = parse_lr_schedule("5e-3:100, 1e-3:1000, 1e-5")
    assert [s.rate(i) for i in (0, 99, 100, 999, 1000, 10**6)] == [5e-3, 5e-3, 1e-3, 1e-3, 1e-5, 1e-5]
    assert s.base_lr == 5e-3
    assert math.isclose(s.base_lr * s(500), 1e-3)
    assert s.stop_step is None and s.steps(2000) == 2000


def test_a1111_stops_when_the_last_step_is_reached() -> None:
    s = parse_lr_schedule("0.01:200, 0.001:1000")
    assert s.stop_step == 1000
    assert s.steps(5000) == 1000 and s.steps(300) == 300


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "expected a number"),
        (" , ", "expected a number"),
        ("fast", '"fast"'),
        ("1e-3:many", '"1e-3:many"'),
        ("1e-3:1.5", '"1e-3:1.5"'),
        ("1e-3:500, 1e-4:300", '"1e-4:300"'),
        ("1e-3:0", '"1e-3:0"'),
        ("0:100", '"0:100"'),
        ("-1e-3", '"-1e-3"'),
        ("nan", '"nan"'),
        ("1e-3, 1e-4:100", '"1e-4:100"'),  # nothing can follow a rate that holds to the end
    ],
)
def test_malformed_strings_name_the_piece(text: str, named: str) -> None:
    with pytest.raises(LRScheduleError, match=named) as info:
        parse_lr_schedule(text)
    assert isinstance(info.value, EmakiError) and isinstance(info.value, ParamsError)


def test_factor_schedules() -> None:
    assert [constant()(i) for i in (0, 10**6)] == [1.0, 1.0]
    assert [linear_decay(10)(i) for i in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    c = cosine(100, end=0.1)
    assert c(0) == 1.0 and math.isclose(c(50), 0.55) and c(100) == pytest.approx(0.1) and c(500) == c(100)
    delayed = cosine(10, start=90)
    assert delayed(89) == 1.0 and delayed(90) == 1.0 and delayed(100) == pytest.approx(0.0)
    w = warmup(4, linear_decay(8))
    assert [w(i) for i in (0, 1, 3, 4)] == [0.25, 0.5 * (1 - 1 / 8), 1 - 3 / 8, 0.5]

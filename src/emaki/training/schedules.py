"""Learning-rate schedules: pure functions of the step index (0 for the first optimizer step) that
return a factor; the loop sets each parameter group's lr to `initial lr × factor`.

>>> s = warmup(10, cosine(100))
>>> [round(s(i), 3) for i in (0, 9, 50, 99)]
[0.1, 0.98, 0.5, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from emaki.training.errors import LRScheduleError

LRSchedule = Callable[[int], float]


def constant() -> LRSchedule:
    """The optimizer's own learning rate at every step."""
    return lambda step: 1.0


def linear_decay(steps: int, end: float = 0.0) -> LRSchedule:
    """From 1 at step 0 down to `end` at step `steps`, then `end`.

    >>> [linear_decay(4, end=0.5)(i) for i in (0, 2, 4, 9)]
    [1.0, 0.75, 0.5, 0.5]
    """

    def schedule(step: int) -> float:
        return 1.0 - (1.0 - end) * min(1.0, step / steps)

    return schedule


def cosine(steps: int, *, end: float = 0.0, start: int = 0) -> LRSchedule:
    """1 until step `start`, then half a cosine down to `end` over `steps` steps, then `end`:
    `end + (1 − end) · ½ (1 + cos(π · min(1, (step − start) / steps)))`
    (Loshchilov & Hutter 2017, without restarts).

    >>> [round(cosine(10, end=0.1, start=5)(i), 3) for i in (0, 5, 10, 15, 20)]
    [1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def schedule(step: int) -> float:
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / steps)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return schedule


def warmup(steps: int, then: LRSchedule) -> LRSchedule:
    """`then`, scaled by `min(1, (step + 1) / steps)`: a linear ramp over the first `steps` steps.

    >>> [warmup(4, constant())(i) for i in (0, 1, 3, 8)]
    [0.25, 0.5, 1.0, 1.0]
    """
    return lambda step: min(1.0, (step + 1) / steps) * then(step)


@dataclass(frozen=True)
class RateSchedule:
    """A1111's learning-rate string as data: `(rate, until)` pieces, `until=None` for "to the end".

    Its rates are absolute (A1111 sets them on the optimizer), so build the optimizer with
    `lr=schedule.base_lr`: the factor at a step is `rate / base_lr`. A1111 stops training when
    the last piece ends (`stop_step`); a run of fewer steps just stops earlier.
    """

    pieces: tuple[tuple[float, int | None], ...]

    @property
    def base_lr(self) -> float:
        return self.pieces[0][0]

    @property
    def stop_step(self) -> int | None:
        return self.pieces[-1][1]

    def steps(self, total: int) -> int:
        """How many steps a run asked for `total` does under this schedule."""
        return total if self.stop_step is None else min(total, self.stop_step)

    def rate(self, step: int) -> float:
        """The learning rate for step index `step`: the first piece that ends after it."""
        for rate, until in self.pieces:
            if until is None or step < until:
                return rate
        return self.pieces[-1][0]

    def __call__(self, step: int) -> float:
        return self.rate(step) / self.base_lr


def parse_lr_schedule(text: str) -> RateSchedule:
    """Parse A1111's "rate:step, rate:step, rate" learning-rate string: each rate holds until the
    step after it (exclusive); a last rate without a step (or with step -1) holds to the end.

    >>> s = parse_lr_schedule("5e-3:100, 1e-3:1000, 1e-5")
    >>> [s.rate(i) for i in (0, 99, 100, 999, 1000, 50_000)]
    [0.005, 0.005, 0.001, 0.001, 1e-05, 1e-05]
    >>> s.stop_step is None, parse_lr_schedule("0.005").pieces
    (True, ((0.005, None),))
    >>> parse_lr_schedule("1e-3:500, 1e-4:-1,").pieces
    ((0.001, 500), (0.0001, None))
    >>> parse_lr_schedule("0.01:200, 0.001:1000").stop_step      # A1111 stops training here
    1000
    >>> parse_lr_schedule("1e-3:500, 1e-4:300")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emaki.training.errors.LRScheduleError: ... piece "1e-4:300": steps must be positive and increase
    """
    pieces: list[tuple[float, int | None]] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        where = f'learning rate "{text}": piece "{piece}"'
        if pieces and pieces[-1][1] is None:
            raise LRScheduleError(f"{where} comes after a rate that holds to the end")
        rate_text, _, step_text = piece.partition(":")
        try:
            rate = float(rate_text)
            until = int(step_text) if step_text.strip() else None
        except ValueError:
            raise LRScheduleError(
                f'{where} is not "rate" or "rate:step" (e.g. "5e-3:100")') from None
        if not (math.isfinite(rate) and rate > 0):
            raise LRScheduleError(f"{where}: the rate must be a positive number")
        if until == -1:
            until = None
        elif until is not None and until <= ((pieces[-1][1] or 0) if pieces else 0):
            raise LRScheduleError(f"{where}: steps must be positive and increase")
        pieces.append((rate, until))
    if not pieces:
        raise LRScheduleError(
            f'learning rate "{text}": expected a number or "rate:step, rate:step, rate"')
    return RateSchedule(tuple(pieces))


def named_schedule(name: str, warmup_steps: int, total: int) -> LRSchedule:
    """kohya's (diffusers') schedulers by name, as factors of each group's rate: `constant`,
    `constant_with_warmup`, `cosine` and `cosine_with_restarts` (one cycle, kohya's default),
    `linear` (to 0 at `total`); all but `constant` ramp up linearly over `warmup_steps` first.

    >>> [round(named_schedule("cosine", 2, 10)(i), 3) for i in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    >>> [named_schedule("linear", 0, 4)(i) for i in (0, 2, 4)]
    [1.0, 0.5, 0.0]
    """
    after = max(1, total - warmup_steps)
    decays: dict[str, LRSchedule] = {
        "constant": constant(),
        "constant_with_warmup": constant(),
        "cosine": cosine(after, start=warmup_steps),
        "cosine_with_restarts": cosine(after, start=warmup_steps),
        "linear": lambda step: max(0.0, 1.0 - max(0, step - warmup_steps) / after),
    }
    if name not in decays:
        raise LRScheduleError(f"lr_scheduler: expected one of {', '.join(decays)}, got {name!r}")
    if name == "constant" or warmup_steps <= 0:
        return decays[name]
    return warmup(warmup_steps, decays[name])

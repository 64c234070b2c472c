"""What can go wrong in a training run, as `EmakiError`s the CLI prints on one line."""

from __future__ import annotations

from emaki.errors import EmakiError, ParamsError


class TrainingError(EmakiError):
    """A training run cannot go on (names the step, file or setting at fault)."""


class NonFiniteLossError(TrainingError):
    """The loss was NaN or infinite for too many steps in a row; the weights were left as they
    were before the first of them."""


class CheckpointError(TrainingError):
    """A training-state file does not fit the run resuming from it (names the file)."""


class LRScheduleError(TrainingError, ParamsError):
    """A learning-rate schedule string is malformed (names the piece at fault)."""

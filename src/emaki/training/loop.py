"""The one training loop: embeddings, hypernetworks, LoRA and the demo model all run on it.

Per optimizer step n (0-based): set each group's lr to `initial_lr × schedule(n)`; run
`accumulate` micro-batches `loss(n·accumulate + k)`, back-propagating `loss / accumulate` (so the
gradient is that of the mean); clip; step; update the EMA. A non-finite loss skips the step (the
weights stay as they were) and `max_nonfinite` of them in a row stop the run. Every
`checkpoint_every` steps, at the end and on cancel, the whole state goes to `checkpoint_dir`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emaki.errors import ParamsError
from emaki.training.checkpoint import STATE_FILE, Rng, RunCounters, load_checkpoint, save_checkpoint
from emaki.training.ema import EMA
from emaki.training.errors import NonFiniteLossError
from emaki.training.schedules import LRSchedule, constant


@dataclass(frozen=True)
class TrainingProgress:
    """After each optimizer step: what a progress bar or an event stream shows."""

    step: int  # optimizer steps done, 1..total
    total: int
    loss: float  # mean over the step's micro-batches; NaN/inf when the step was skipped
    lr: float  # of the first parameter group, as used for this step
    skipped: int  # non-finite steps skipped so far in the run
    checkpoint: Path | None = None  # the state file, when this step wrote it


@dataclass(frozen=True)
class TrainingResult:
    """How a run ended."""

    step: int  # optimizer steps done (== total unless cancelled)
    total: int
    cancelled: bool
    skipped: int
    checkpoint: Path | None  # the last state file written, if any


ProgressCallback = Callable[[TrainingProgress], None]


@dataclass
class TrainingLoop:
    """What to train and how; `run()` trains it.

    `loss(i)` computes the loss of micro-batch `i` (drawing its own batch, from its own seeded
    generators; list those in `rngs` so that a resumed run draws what the uninterrupted one
    would have). The parameters trained are those of `optimizer`.
    """

    loss: Callable[[int], torch.Tensor]
    optimizer: torch.optim.Optimizer
    total: int
    schedule: LRSchedule = field(default_factory=constant)
    accumulate: int = 1
    clip_grad_norm: float | None = None
    ema: EMA | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # 0: only at the end and on cancel
    resume: bool = False  # go on from checkpoint_dir's state file, if there is one
    rngs: Sequence[Rng] = ()
    max_nonfinite: int = 10

    def __post_init__(self) -> None:
        for name in ("total", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ParamsError(f"{name}: must be 0 or more, got {getattr(self, name)}")
        for name in ("accumulate", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ParamsError(f"{name}: must be 1 or more, got {getattr(self, name)}")
        if self.resume and self.checkpoint_dir is None:
            raise ParamsError("resume: needs a checkpoint_dir to resume from")

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def state_file(self) -> Path | None:
        return self.checkpoint_dir / STATE_FILE if self.checkpoint_dir is not None else None

    def run(self, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> TrainingResult:
        """Train up to `total` steps. Setting `cancel` stops before the next step, after saving a
        checkpoint; raises `NonFiniteLossError` after `max_nonfinite` non-finite steps in a row."""
        params, path, saved = self.parameters, self.state_file, None
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        counters = RunCounters()
        if self.resume and path is not None and path.exists():
            counters = load_checkpoint(path, params, self.optimizer, self.ema, self.rngs)
        self.optimizer.zero_grad(set_to_none=True)
        while counters.step < self.total:
            if cancel is not None and cancel.is_set():
                saved = self._save(counters) or saved
                return TrainingResult(counters.step, self.total, True, counters.skipped, saved)
            lr = self._set_lr(counters.step)
            loss = self._optimizer_step(counters.step)
            counters.step += 1
            if math.isfinite(loss):
                counters.in_a_row = 0
            else:
                counters.skipped += 1
                counters.in_a_row += 1
                if counters.in_a_row >= self.max_nonfinite:
                    raise NonFiniteLossError(
                        f"training: the loss was {loss} for {counters.in_a_row} steps in a row "
                        f"(up to step {counters.step} of {self.total}); the weights are those of "
                        f"step {counters.step - counters.in_a_row}. Lower the learning rate or "
                        "check the data.")
            every = self.checkpoint_every
            due = counters.step == self.total or (every > 0 and counters.step % every == 0)
            written = self._save(counters) if due else None
            saved = written or saved
            if progress is not None:
                progress(TrainingProgress(counters.step, self.total, loss, lr, counters.skipped,
                                          written))
        return TrainingResult(counters.step, self.total, False, counters.skipped, saved)

    def _set_lr(self, step: int) -> float:
        factor = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return float(self.optimizer.param_groups[0]["lr"])

    def _optimizer_step(self, step: int) -> float:
        """One update from `accumulate` micro-batches; returns their mean loss, or the first
        non-finite one (and then changes nothing)."""
        total = 0.0
        for k in range(self.accumulate):
            loss = self.loss(step * self.accumulate + k)
            value = float(loss.detach())
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                return value
            (loss / self.accumulate).backward()
            total += value
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(step + 1)
        return total / self.accumulate

    def _save(self, counters: RunCounters) -> Path | None:
        if self.state_file is None:
            return None
        return save_checkpoint(self.state_file, counters, self.parameters, self.optimizer,
                               self.ema, self.rngs)

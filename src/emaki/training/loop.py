"""The one training loop: embeddings, hypernetworks, LoRA and the demo model all run on it.

Per optimizer step n (0-based): set each group's lr to `initial_lr × schedule(n) × scale`; run
`accumulate` micro-batches `loss(i)` (i counts every micro-batch ever drawn, so a retried step
sees new data), back-propagating `loss / accumulate` (so the gradient is that of the mean); clip;
step; update the EMA.

Nothing non-finite is ever kept: a non-finite loss or gradient, or weights made non-finite by the
step, roll the weights and the optimizer back to the state before the step, halve `scale` (for
the rest of the run) and retry the step; `max_nonfinite` roll-backs in a row stop the run. Every
`checkpoint_every` steps, at the end and on cancel, the whole state goes to `checkpoint_dir`.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Sequence
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
    loss: float  # mean over the step's micro-batches; NaN/inf when the step was rolled back
    lr: float  # of the first parameter group, as used for this step
    skipped: int  # non-finite steps rolled back so far in the run
    checkpoint: Path | None = None  # the state file, when this step wrote it
    rolled_back: bool = False  # this attempt met a non-finite value: undone, the rate halved


@dataclass(frozen=True)
class TrainingResult:
    """How a run ended."""

    step: int  # optimizer steps done (== total unless cancelled)
    total: int
    cancelled: bool
    skipped: int  # roll-backs
    checkpoint: Path | None  # the last state file written, if any
    lr_scale: float = 1.0  # what the roll-backs left of the schedule's rates


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
    clip_grad_norm: float | Callable[[int], float] | None = None  # a number, or one per step index
    clip_grad_value: float | Callable[[int], float] | None = None  # (A1111's clip value is a schedule)
    ema: EMA | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # 0: only at the end and on cancel
    resume: bool = False  # go on from checkpoint_dir's state file, if there is one
    rngs: Sequence[Rng] = ()
    max_nonfinite: int = 10
    start: int = 0  # the step the weights are at (a network trained before); counts toward `total`

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
        counters = RunCounters(step=self.start, draws=self.start * self.accumulate)
        if self.resume and path is not None and path.exists():
            counters = load_checkpoint(path, params, self.optimizer, self.ema, self.rngs)
        self.optimizer.zero_grad(set_to_none=True)
        while counters.step < self.total:
            if cancel is not None and cancel.is_set():
                saved = self._save(counters) or saved
                return TrainingResult(counters.step, self.total, True, counters.skipped, saved, counters.lr_scale)
            lr = self._set_lr(counters.step, counters.lr_scale)
            loss = self._optimizer_step(counters)
            if not math.isfinite(loss):
                counters.skipped += 1
                counters.in_a_row += 1
                counters.lr_scale *= 0.5
                if progress is not None:
                    progress(TrainingProgress(counters.step, self.total, loss, lr, counters.skipped, None, True))
                if counters.in_a_row >= self.max_nonfinite:
                    raise NonFiniteLossError(
                        f"training: the loss or its gradient was not finite {counters.in_a_row} times in a "
                        f"row at step {counters.step + 1} of {self.total}, even at {lr:g} (the rate halved "
                        f"each time); the weights are those of step {counters.step}. Check the data, or "
                        "start from a lower learning rate.")
                continue
            counters.step += 1
            counters.in_a_row = 0
            every = self.checkpoint_every
            due = counters.step == self.total or (every > 0 and counters.step % every == 0)
            written = self._save(counters) if due else None
            saved = written or saved
            if progress is not None:
                progress(TrainingProgress(counters.step, self.total, loss, lr, counters.skipped, written))
        return TrainingResult(counters.step, self.total, False, counters.skipped, saved, counters.lr_scale)

    def _set_lr(self, step: int, scale: float) -> float:
        factor = self.schedule(step) * scale
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return float(self.optimizer.param_groups[0]["lr"])

    def _optimizer_step(self, counters: RunCounters) -> float:
        """One update from `accumulate` micro-batches; returns their mean loss. On a non-finite
        loss, gradient or result, returns NaN/inf and leaves weights and optimizer as they were."""
        total = 0.0
        for _ in range(self.accumulate):
            loss = self.loss(counters.draws)
            counters.draws += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                return value
            (loss / self.accumulate).backward()
            total += value
        params = self.parameters
        if not all_finite(p.grad for p in params if p.grad is not None):
            self.optimizer.zero_grad(set_to_none=True)
            return math.nan
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, _at(self.clip_grad_norm, counters.step))
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(params, _at(self.clip_grad_value, counters.step))
        before = ([p.detach().clone() for p in params], copy.deepcopy(self.optimizer.state_dict()))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not all_finite(params):
            with torch.no_grad():
                for param, kept in zip(params, before[0], strict=True):
                    param.copy_(kept)
            self.optimizer.load_state_dict(before[1])
            return math.inf
        if self.ema is not None:
            self.ema.update(counters.step + 1)
        return total / self.accumulate

    def _save(self, counters: RunCounters) -> Path | None:
        if self.state_file is None:
            return None
        return save_checkpoint(self.state_file, counters, self.parameters, self.optimizer,
                               self.ema, self.rngs)


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (what may be kept, saved or hashed)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _at(setting: float | Callable[[int], float], step: int) -> float:
    return setting(step) if callable(setting) else setting

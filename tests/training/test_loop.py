"""The training loop on tiny problems: a small MLP (with dropout, so the global RNG matters)
fitted to a fixed linear map from batches drawn by the run's own generators."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emaki.errors import ParamsError
from emaki.training import (
    EMA,
    STATE_FILE,
    CheckpointError,
    NonFiniteLossError,
    TrainingLoop,
    TrainingProgress,
    load_checkpoint,
    parse_lr_schedule,
    warmup,
)

TARGET = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0]])


@dataclass
class Run:
    loop: TrainingLoop
    model: nn.Module
    calls: list[int]
    events: list[TrainingProgress]

    def params(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def make_run(folder: Path | None = None, *, init_seed: int = 0, dropout: float = 0.1,
             bad: Callable[[int], float | None] = lambda i: None, **options: Any) -> Run:
    """A fresh model, optimizer, EMA and generators (as a new process would make them)."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(dropout), nn.Tanh(), nn.Linear(16, 2))
    gen, rng = torch.Generator().manual_seed(1), random.Random(2)
    calls: list[int] = []

    def loss(i: int) -> torch.Tensor:
        calls.append(i)
        x = torch.randn(8, 4, generator=gen) * rng.uniform(0.5, 1.5)
        value = F.mse_loss(model(x), x @ TARGET.T)
        poison = bad(i)
        return value * poison if poison is not None else value

    options.setdefault("total", 12)
    loop = TrainingLoop(loss, torch.optim.AdamW(model.parameters(), lr=1e-2), checkpoint_dir=folder,
                        ema=EMA(model.parameters(), 0.9, warmup=True), rngs=[gen, rng], **options)
    return Run(loop, model, calls, [])


def run(r: Run, **kwargs: Any) -> Any:
    return r.loop.run(progress=r.events.append, **kwargs)


def test_loss_goes_down() -> None:
    r = make_run(total=150, dropout=0.0)
    result = run(r)
    losses = [e.loss for e in r.events]
    assert result.step == 150 and not result.cancelled and result.checkpoint is None
    assert [e.step for e in r.events] == list(range(1, 151))
    assert sum(losses[-10:]) < 0.05 * sum(losses[:10])


def test_schedule_sets_the_learning_rate_of_each_step() -> None:
    rates = parse_lr_schedule("1e-2:3, 1e-3:6, 1e-4")
    r = make_run(total=8, schedule=rates)
    for group in r.loop.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = rates.base_lr
    run(r)
    expected = [1e-2] * 3 + [1e-3] * 3 + [1e-4] * 2
    assert all(math.isclose(e.lr, x) for e, x in zip(r.events, expected, strict=True))
    assert math.isclose(r.loop.optimizer.param_groups[0]["lr"], 1e-4)


def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    whole = make_run(tmp_path / "whole", checkpoint_every=4)
    run(whole)

    def crash(event: TrainingProgress) -> None:
        if event.step == 6:  # steps 5 and 6 are lost: the last checkpoint is step 4
            raise KeyboardInterrupt

    crashed = make_run(tmp_path / "run", checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        crashed.loop.run(progress=crash)
    torch.randn(100)  # the process went on doing other things with the global RNG
    resumed = make_run(tmp_path / "run", init_seed=123, checkpoint_every=4, resume=True)
    result = run(resumed)
    assert result.step == 12 and resumed.calls == list(range(4, 12))
    assert all(torch.equal(a, b) for a, b in zip(whole.params(), resumed.params(), strict=True))
    assert whole.loop.ema is not None and resumed.loop.ema is not None
    assert all(torch.equal(a, b) for a, b in zip(whole.loop.ema.shadow, resumed.loop.ema.shadow, strict=True))
    assert [e.loss for e in whole.events[4:]] == [e.loss for e in resumed.events]
    assert [e.checkpoint is not None for e in whole.events] == [i % 4 == 0 for i in range(1, 13)]


def test_cancel_saves_and_stops_then_resume_finishes(tmp_path: Path) -> None:
    whole = make_run(total=10)
    run(whole)
    cancel = threading.Event()
    first = make_run(tmp_path, total=10)

    def cancel_after_3(event: TrainingProgress) -> None:
        if event.step == 3:
            cancel.set()

    result = first.loop.run(progress=cancel_after_3, cancel=cancel)
    assert result.cancelled and result.step == 3 and first.calls == [0, 1, 2]
    assert result.checkpoint == tmp_path / STATE_FILE
    again = make_run(tmp_path, total=10, resume=True)
    assert load_checkpoint(tmp_path / STATE_FILE, again.loop.parameters, again.loop.optimizer,
                           again.loop.ema, again.loop.rngs).step == 3
    rest = run(again)
    assert not rest.cancelled and rest.step == 10 and again.calls == list(range(3, 10))
    assert all(torch.equal(a, b) for a, b in zip(whole.params(), again.params(), strict=True))


def test_cancel_without_a_folder_just_stops() -> None:
    cancel = threading.Event()
    cancel.set()
    r = make_run()
    result = run(r, cancel=cancel)
    assert result.cancelled and result.step == 0 and result.checkpoint is None and r.calls == []


def test_non_finite_steps_roll_back_halve_the_rate_and_retry_on_new_data() -> None:
    r = make_run(bad=lambda i: math.nan if i in (3, 4) else math.inf if i == 7 else None)
    snapshots: list[list[torch.Tensor]] = []

    def record(event: TrainingProgress) -> None:
        r.events.append(event)
        snapshots.append(r.params())

    result = r.loop.run(progress=record)
    assert result.step == 12 and result.skipped == 3 and result.lr_scale == 0.125
    assert [e.rolled_back for e in r.events].count(True) == 3 and len(r.events) == 15
    assert r.calls == list(range(15))  # a retried step draws the next micro-batch
    rolled = [i for i, e in enumerate(r.events) if e.rolled_back]
    assert rolled == [3, 4, 7]
    for i in rolled:  # a rolled-back attempt leaves the weights as the step before left them
        assert all(torch.equal(a, b) for a, b in zip(snapshots[i - 1], snapshots[i], strict=True))
        assert not math.isfinite(r.events[i].loss)
    assert [round(e.lr / 1e-2, 4) for e in r.events[3:6]] == [1.0, 0.5, 0.25]  # each roll-back halves
    assert r.loop.optimizer.state[r.loop.parameters[0]]["step"] == 12


def test_a_step_that_makes_weights_non_finite_is_undone() -> None:
    weight = nn.Parameter(torch.tensor([3e38, 1.0]))
    loop = TrainingLoop(lambda i: -(weight * torch.tensor([1e38 if i == 0 else 0.0, 1.0])).sum(),
                        torch.optim.SGD([weight], lr=1.0), total=1)
    events: list[TrainingProgress] = []
    result = loop.run(progress=events.append)
    assert events[0].rolled_back and math.isinf(events[0].loss)
    assert result.step == 1 and result.skipped == 1
    assert weight.detach().tolist() == [torch.tensor(3e38).item(), 1.5]  # undone, then a step at half the rate


def test_a_non_finite_gradient_under_a_finite_loss_is_rolled_back() -> None:
    weight = nn.Parameter(torch.tensor([0.0, 4.0]))
    loop = TrainingLoop(lambda i: torch.sqrt(weight[0] if i == 0 else weight[1]),
                        torch.optim.SGD([weight], lr=1.0), total=1)
    result = loop.run()
    assert result.skipped == 1 and weight.detach().tolist() == [0.0, 4.0 - 0.5 * 0.25]


def test_too_many_non_finite_steps_in_a_row_stop_the_run(tmp_path: Path) -> None:
    r = make_run(tmp_path, bad=lambda i: math.nan if i >= 5 else None, max_nonfinite=3, checkpoint_every=5)
    with pytest.raises(NonFiniteLossError, match=r"not finite 3 times in a row at step 6 of 12.*those of step 5"):
        run(r)
    assert len(r.events) == 8 and r.events[-1].skipped == 3


def test_accumulation_matches_one_big_batch() -> None:
    data = torch.randn(5, 8, 4, generator=torch.Generator().manual_seed(0))

    def fit(accumulate: int) -> tuple[list[torch.Tensor], list[float]]:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        part = 8 // accumulate

        def loss(i: int) -> torch.Tensor:
            x = data[i // accumulate][(i % accumulate) * part:(i % accumulate + 1) * part]
            return F.mse_loss(model(x), x @ TARGET.T)

        losses: list[float] = []
        loop = TrainingLoop(loss, torch.optim.SGD(model.parameters(), lr=0.05), total=5,
                            accumulate=accumulate, schedule=warmup(2, lambda s: 1.0))
        loop.run(progress=lambda e: losses.append(e.loss))
        return [p.detach() for p in model.parameters()], losses

    (one, one_losses), (four, four_losses) = fit(1), fit(4)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one, four, strict=True))
    assert one_losses == pytest.approx(four_losses, rel=1e-5)


def test_clipping_and_ema() -> None:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.zeros(3))
    ema = EMA([weight], 0.5)
    loop = TrainingLoop(lambda i: (weight * torch.tensor([100.0, 0.0, 0.0])).sum(),
                        torch.optim.SGD([weight], lr=1.0), total=1, clip_grad_norm=2.0, ema=ema)
    loop.run()
    assert torch.allclose(weight.detach(), torch.tensor([-2.0, 0.0, 0.0]))
    assert torch.allclose(ema.shadow[0], torch.tensor([-1.0, 0.0, 0.0]))
    copy = torch.zeros(3)
    ema.copy_to([copy])
    assert torch.equal(copy, ema.shadow[0])
    assert EMA([weight], 0.999, warmup=True).decay_at(1) == 2 / 11


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save, saves = torch.save, []

    def save_then_fail(obj: object, f: Path) -> None:
        saves.append(f)
        if len(saves) == 2:  # the second checkpoint dies half-way through writing
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise OSError("No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_then_fail)
    r = make_run(tmp_path, checkpoint_every=2)
    with pytest.raises(OSError, match="No space"):
        run(r)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]
    assert saves[1] != tmp_path / STATE_FILE and tmp_path in saves[1].parents  # written beside, then renamed
    fresh = make_run(tmp_path)
    counters = load_checkpoint(tmp_path / STATE_FILE, fresh.loop.parameters, fresh.loop.optimizer,
                               fresh.loop.ema, fresh.loop.rngs)
    assert counters.step == 2


def test_unreadable_or_foreign_state_files_are_named(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=STATE_FILE):
        run(make_run(tmp_path, resume=True))
    run(make_run(tmp_path / "other", total=1))
    model = nn.Linear(3, 3)
    other = TrainingLoop(lambda i: model(torch.ones(3)).sum(), torch.optim.SGD(model.parameters(), lr=0.1),
                         total=2, checkpoint_dir=tmp_path / "other", resume=True)
    with pytest.raises(CheckpointError, match="other shapes"):
        other.run()


def test_settings_are_checked() -> None:
    for options in ({"accumulate": 0}, {"total": -1}, {"max_nonfinite": 0}, {"resume": True}):
        with pytest.raises(ParamsError, match=next(iter(options))):
            make_run(**options)


def test_a_resumed_run_keeps_its_own_settings(tmp_path: Path) -> None:
    run(make_run(tmp_path, total=4))
    again = make_run(tmp_path, total=6, resume=True)
    for group in again.loop.optimizer.param_groups:
        group["lr"], group["weight_decay"] = 5e-3, 0.5
    run(again)
    assert [e.lr for e in again.events] == [5e-3, 5e-3]
    assert again.loop.optimizer.param_groups[0]["weight_decay"] == 0.5
    assert again.loop.optimizer.state[again.loop.parameters[0]]["step"] == 6

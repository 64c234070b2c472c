"""The training-state file: everything a run needs to go on exactly where it stopped.

One file per run folder (`training-state.pt`), replaced atomically at every checkpoint, so a
reader (or a crash) only ever sees the previous state or the new one. It holds the step and
skip counters, the trained parameters (in optimizer order), the optimizer state, the EMA, and
the RNG states (torch's global CPU generator and the run's own generators); it is read back with
torch's restricted (`weights_only`) loader.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from emaki.files import atomic_write
from emaki.training.ema import EMA
from emaki.training.errors import CheckpointError

STATE_FILE = "training-state.pt"
FORMAT = "emaki-training-state/1"

Rng = torch.Generator | random.Random


@dataclass
class RunCounters:
    """Where a run is: optimizer steps done, micro-batches drawn, non-finite steps rolled back (in
    all, and in a row) and the learning-rate factor those roll-backs left."""

    step: int = 0
    skipped: int = 0
    in_a_row: int = 0
    draws: int = 0
    lr_scale: float = 1.0


def save_checkpoint(path: Path, counters: RunCounters, params: Sequence[torch.Tensor],
                    optimizer: torch.optim.Optimizer, ema: EMA | None, rngs: Sequence[Rng]) -> Path:
    state = {
        "format": FORMAT,
        "step": counters.step,
        "skipped": counters.skipped,
        "in_a_row": counters.in_a_row,
        "draws": counters.draws,
        "lr_scale": counters.lr_scale,
        "params": [p.detach() for p in params],
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "torch_rng": torch.get_rng_state(),
        "rngs": [r.get_state() if isinstance(r, torch.Generator) else r.getstate() for r in rngs],
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Path, params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer,
                    ema: EMA | None, rngs: Sequence[Rng]) -> RunCounters:
    """Put the state saved in `path` back into the run's objects; return its counters.

    The optimizer and EMA settings (learning rate, weight decay, EMA decay) stay those of this
    run, so a run can go on with new ones (A1111 lets a resumed training change its rate)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a truncated or foreign file
        raise CheckpointError(
            f"{path}: not a readable training state ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an emaki training state (expected format {FORMAT})")
    saved = state["params"]
    shapes = [tuple(p.shape) for p in params]
    if [tuple(s.shape) for s in saved] != shapes:
        raise CheckpointError(f"{path}: holds {len(saved)} parameters of other shapes than this "
                              f"run's {len(shapes)}; was it written by another kind of training?")
    if ema is not None and state["ema"] is None:
        raise CheckpointError(f"{path}: has no EMA weights, but this run keeps an EMA")
    if len(state["rngs"]) != len(rngs):
        raise CheckpointError(
            f"{path}: holds {len(state['rngs'])} random generators, this run has {len(rngs)}")
    with torch.no_grad():
        for param, value in zip(params, saved, strict=True):
            param.copy_(value)
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: the optimizer state does not fit this optimizer ({e})") from e
    for group, kept in zip(optimizer.param_groups, settings, strict=True):
        group.update(kept)  # lr, weight decay, ... are this run's; moments and counts the file's
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    for rng, rng_state in zip(rngs, state["rngs"], strict=True):
        if isinstance(rng, torch.Generator):
            rng.set_state(rng_state)
        else:
            rng.setstate(rng_state)
    return RunCounters(int(state["step"]), int(state["skipped"]), int(state["in_a_row"]),
                       int(state.get("draws", 0)), float(state.get("lr_scale", 1.0)))

"""Exponential moving average of trained parameters (Polyak averaging), kept beside them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class EMA:
    """`e ← e + (1 − d)(p − e)` after every optimizer step; with `warmup`, the decay at step n
    (steps done) is `min(decay, (1 + n) / (10 + n))`, so early averages are not stuck at the
    initial weights."""

    def __init__(self, parameters: Iterable[torch.Tensor], decay: float, *,
                 warmup: bool = False) -> None:
        self.parameters = list(parameters)
        self.decay = decay
        self.warmup = warmup
        self.shadow = [p.detach().clone() for p in self.parameters]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the averages towards the parameters after optimizer step `step` (1-based)."""
        weight = 1.0 - self.decay_at(step)
        for average, param in zip(self.shadow, self.parameters, strict=True):
            average.lerp_(param.detach(), weight)

    @torch.no_grad()
    def copy_to(self, parameters: Sequence[torch.Tensor]) -> None:
        """Write the averages into `parameters` (e.g. those of a copy of the model, for export)."""
        for target, average in zip(parameters, self.shadow, strict=True):
            target.copy_(average)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the averages of `state`; the decay stays this object's."""
        for average, saved in zip(self.shadow, state["shadow"], strict=True):
            average.copy_(saved)

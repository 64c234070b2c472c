"""What a sampler reports after each step (CLI progress bar, server previews, interrupt)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepInfo:
    """State after sampler step `step` (0-based) of `total`."""

    step: int
    total: int
    sigma: float
    x: torch.Tensor
    denoised: torch.Tensor


StepCallback = Callable[[StepInfo], None]

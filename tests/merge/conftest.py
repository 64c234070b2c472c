"""Fixtures for the merger tests: checkpoint files made from `merge_fixtures.random_state`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from merge_fixtures import random_state
from safetensors.torch import save_file


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """`make_model(name, seed, dtype=fp16, fmt="safetensors", **random_state options)` → path."""

    def make(
        name: str,
        seed: int,
        dtype: torch.dtype = torch.float16,
        fmt: str = "safetensors",
        state: dict[str, torch.Tensor] | None = None,
        metadata: dict[str, str] | None = None,
        **options,
    ) -> Path:
        state = state if state is not None else random_state(seed, dtype, **options)
        path = tmp_path / name
        if fmt == "safetensors":
            save_file(
                {k: v.contiguous() for k, v in state.items()},
                str(path),
                metadata=metadata or {"format": "pt"},
            )
        else:  # the original SD/NAI .ckpt layout: a state_dict wrapper, old text-encoder names
            old = {
                k.replace(
                    "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."
                ): v
                for k, v in state.items()
            }
            torch.save({"state_dict": old, "global_step": 1, "epoch": 1}, path)
        return path

    return make

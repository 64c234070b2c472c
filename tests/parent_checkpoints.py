"""Two parent checkpoints for merge and lineage tests: `a`, the tiny model as it is, and `b`, every
weight of its UNet, text encoder and VAE moved by 0.05 of seeded Gaussian noise."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PARTS = ("model.", "cond_stage_model.", "first_stage_model.")


def write_parents(tiny: Path, folder: Path, seed: int) -> Path:
    """`a.safetensors` and `b.safetensors` in `folder` (made if missing); returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny, folder / "a.safetensors")
    g = torch.Generator().manual_seed(seed)
    moved = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() and k.startswith(PARTS)
                 else v).contiguous()
             for k, v in load_file(tiny).items()}
    save_file(moved, str(folder / "b.safetensors"), metadata={"format": "pt"})
    return folder

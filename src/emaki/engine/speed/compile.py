"""`--compile`: torch.compile (TorchInductor) on the UNet. Not an approximation: the same
operations, fused into kernels generated for this machine, so the image matches the eager one
within float rounding and the infotext records nothing.

The first UNet call of each shape compiles (minutes on a 2-core CPU); inductor keeps what it
made on disk (its FX graph cache, on by default), so a later process starts from there. The
cache folder is inductor's `TORCHINDUCTOR_CACHE_DIR`, which the surfaces set to
`compile_cache_dir(home)` (EMAKI_HOME/cache/compile) before the first compile."""

from __future__ import annotations

from pathlib import Path

import torch


def compile_cache_dir(home: Path) -> Path:
    """Where `--compile` keeps inductor's caches in a workspace rooted at `home`."""
    return home / "cache" / "compile"


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether `module` runs through torch.compile (`nn.Module.compile`, done in place)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def set_compiled(unet: torch.nn.Module, compiled: bool) -> None:
    """Run `unet` compiled or eager from its next call on; nothing happens when it already does.

    In place (`nn.Module.compile`), so the loaded model, its patches (LoRA weights changed in
    place, attention processors swapped by hypernetworks or T-GATE) and its hooks stay the
    module's: a changed processor fails dynamo's guards and recompiles, it is never skipped.
    No inductor `freezing`: it would bake the weights in as constants and so ignore a LoRA
    merged into them after the first compile."""
    if compiled == is_compiled(unet):
        return
    if compiled:
        unet.compile()
    else:
        unet._compiled_call_impl = None  # what nn.Module.__call__ checks; eager again

"""Fixtures for the sampler tests: a toy denoiser, seeded noise streams, the k-diffusion reference.

The reference is k-diffusion's own `sampling.py` (PyPI `k-diffusion==0.1.1.post1`, installed
with `--no-deps`), loaded without its package `__init__` (which imports torchvision, CLIP, ...):
its single `utils.append_dims` import is given a stand-in. It needs `scipy`, `torchsde` and
`torchdiffeq`; the comparison tests are skipped when they are missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sampling_helpers import NoiseStream, TorchWithStream

from emaki.sampling import model_sigmas, sd1_alphas_cumprod


def _load_reference() -> types.ModuleType | None:
    if "_kdiffusion_ref.sampling" in sys.modules:
        return sys.modules["_kdiffusion_ref.sampling"]
    for dep in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        if importlib.util.find_spec(dep) is None:
            return None
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    pkg = types.ModuleType("_kdiffusion_ref")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("_kdiffusion_ref.utils")

    def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims  # type: ignore[attr-defined]
    pkg.utils = utils  # type: ignore[attr-defined]
    sys.modules["_kdiffusion_ref"] = pkg
    sys.modules["_kdiffusion_ref.utils"] = utils
    mod_spec = importlib.util.spec_from_file_location(
        "_kdiffusion_ref.sampling", root / "sampling.py"
    )
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["_kdiffusion_ref.sampling"] = module
    mod_spec.loader.exec_module(module)
    return module


def _load_reference_external() -> types.ModuleType | None:
    if _load_reference() is None:
        return None
    if "_kdiffusion_ref.external" in sys.modules:
        return sys.modules["_kdiffusion_ref.external"]
    root = Path(sys.modules["_kdiffusion_ref"].__path__[0])
    mod_spec = importlib.util.spec_from_file_location(
        "_kdiffusion_ref.external", root / "external.py"
    )
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules["_kdiffusion_ref.external"] = module
    mod_spec.loader.exec_module(module)
    return module


def _missing_reference(message: str) -> None:
    """Skip on a developer machine without the reference; fail in CI, where .ci/run installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}: .ci/run should have installed it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def kdiff_external() -> types.ModuleType:
    """k-diffusion's `external.py` (DiscreteSchedule: the model's sigma <-> t mapping)."""
    module = _load_reference_external()
    if module is None:
        _missing_reference("k-diffusion reference not installed")
    return module


@pytest.fixture(scope="session")
def kdiff() -> types.ModuleType:
    module = _load_reference()
    if module is None:
        _missing_reference("k-diffusion reference not installed (pip install --no-deps k-diffusion)")
    return module


@pytest.fixture
def reference_with_stream(kdiff: types.ModuleType) -> Iterator[Any]:
    """Run a k-diffusion sampler with its `torch.randn_like` reading from a given stream."""
    saved = kdiff.torch

    def run(stream: NoiseStream) -> types.ModuleType:
        kdiff.torch = TorchWithStream(stream)
        return kdiff

    yield run
    kdiff.torch = saved


@pytest.fixture(scope="session")
def sd_sigmas() -> torch.Tensor:
    return model_sigmas(sd1_alphas_cumprod())

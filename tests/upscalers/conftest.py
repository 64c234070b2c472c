"""Tiny upscaler files built at test time from the tensor names real ones carry (no downloads):
Real-ESRGAN's RRDBNet ("ESRGAN" to spandrel) and SRVGGNet "Compact"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


def _conv(state: dict[str, torch.Tensor], name: str, out: int, inp: int, g: torch.Generator, gain: float) -> None:
    state[f"{name}.weight"] = torch.randn(out, inp, 3, 3, generator=g) * gain / (inp * 9) ** 0.5
    state[f"{name}.bias"] = torch.randn(out, generator=g) * 0.01


def esrgan_state(features: int = 8, blocks: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 4x RRDBNet in Real-ESRGAN's names (conv_first, body.N.rdbK.convJ, conv_up1/2, conv_hr,
    conv_last); growth channels 32 as in every released ESRGAN file."""
    g, grow, state = torch.Generator().manual_seed(seed), 32, {}
    _conv(state, "conv_first", features, 3, g, 1.0)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                _conv(state, f"body.{block}.rdb{rdb}.conv{conv}", features if conv == 5 else grow,
                      features + (conv - 1) * grow, g, 1.0)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, features, features, g, 1.0)
    _conv(state, "conv_last", 3, features, g, 1.0)
    return state


def compact_state(features: int = 8, convs: int = 2, scale: int = 2, seed: int = 0,
                  gain: float = 1.0) -> dict[str, torch.Tensor]:
    """An SRVGGNetCompact (body.0 conv, body.1 PReLU, ..., last conv to 3·scale² channels);
    its output adds the nearest-upscaled input, so with a small `gain` it is nearly that."""
    g, state = torch.Generator().manual_seed(seed), {}
    _conv(state, "body.0", features, 3, g, gain)
    state["body.1.weight"] = torch.full((features,), 0.25)
    for i in range(convs):
        _conv(state, f"body.{2 + 2 * i}", features, features, g, gain)
        state[f"body.{3 + 2 * i}.weight"] = torch.full((features,), 0.25)
    _conv(state, f"body.{2 + 2 * convs}", 3 * scale * scale, features, g, gain)
    return state


def write_model(state: dict[str, torch.Tensor], path: Path, *, wrap: str | None = None) -> Path:
    """`.safetensors` flat, or `.pth`/`.pt` by torch.save (inside `wrap`, e.g. "params_ema",
    as Real-ESRGAN ships its files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path


@pytest.fixture(scope="session")
def upscaler_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upscaler-files")
    return {
        "esrgan.safetensors": write_model(esrgan_state(), folder / "4x-Tiny.safetensors"),
        "esrgan.pth": write_model(esrgan_state(seed=1), folder / "4x-TinyPth.pth", wrap="params_ema"),
        "compact.safetensors": write_model(compact_state(), folder / "2x-Compact.safetensors"),
        "compact.pth": write_model(compact_state(seed=1), folder / "2x-CompactPth.pth"),
    }


@pytest.fixture
def home_upscalers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh EMAKI_HOME whose `upscalers` folder holds "4x-Tiny" (ESRGAN) and "2x-Compact"."""
    home = tmp_path / "home"
    monkeypatch.setenv("EMAKI_HOME", str(home))
    folder = home / "upscalers"
    write_model(esrgan_state(), folder / "4x-Tiny.safetensors")
    write_model(compact_state(gain=0.01), folder / "2x-Compact.pth")
    return folder

"""Seamless tiling (A1111's `tiling`): circular padding in every UNet and VAE convolution for
one run, undone afterwards; `Tiling: True` in the infotext, read back.

A picture made with circular convolutions lives on a torus: shifting the starting noise shifts
the picture by the same amount, wrapping around (so its left and right edges, top and bottom,
continue into each other as its inside does). A run with zero padding has borders and is not
shift-equivariant; that is the control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_runner import ONE_THREAD

from emaki.engine import Cancel, Engine, stages
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams
from emaki.workspace import Workspace

SHIFT = 4  # latent pixels: a multiple of the tiny UNet's downsampling (2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(Workspace(tmp_path_factory.mktemp("tiling")), ONE_THREAD)


def _params(model: Path, **fields: object) -> GenerationParams:
    return GenerationParams.create(**({"prompt": "1girl", "model": str(model), "seed": 3, "steps": 2,
                                       "sampler_name": "Euler", "width": 32, "height": 32} | fields))


def _convs(engine: Engine, model: Path) -> list[torch.nn.Conv2d]:
    parts = engine.load(str(model)).components
    convs = [m for part in (parts.unet, parts.vae) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    return [conv for conv in convs if conv.padding != (0, 0)]  # an unpadded one reads nothing past the edge


def _picture(engine: Engine, model: Path, monkeypatch: pytest.MonkeyPatch, *, tiling: bool, shift: int) -> np.ndarray:
    """A run whose starting noise (the seed's) is rolled by `shift` latent pixels both ways."""
    original = stages.image_rng

    def rolled_rng(*args: object, **kwargs: object) -> object:
        rng = original(*args, **kwargs)  # type: ignore[arg-type]
        first = rng.first
        rng.first = lambda: torch.roll(first(), (shift, shift), dims=(-2, -1))  # type: ignore[method-assign]
        return rng

    monkeypatch.setattr(stages, "image_rng", rolled_rng)
    image = engine.generate(_params(model, tiling=tiling), save=False).images[0].image
    monkeypatch.setattr(stages, "image_rng", original)
    return np.asarray(image, dtype=np.float32)


def test_a_tiling_picture_wraps_around_a_plain_one_does_not(engine, tiny_safetensors, monkeypatch):
    factor = engine.load(str(tiny_safetensors)).components.config.vae_scale_factor
    pixels = SHIFT * factor

    def mismatch(tiling: bool) -> float:
        first = _picture(engine, tiny_safetensors, monkeypatch, tiling=tiling, shift=0)
        shifted = _picture(engine, tiny_safetensors, monkeypatch, tiling=tiling, shift=SHIFT)
        return float(np.abs(np.roll(first, (pixels, pixels), axis=(0, 1)) - shifted).max())

    plain, tiled = mismatch(False), mismatch(True)
    assert tiled <= 2  # the same picture, shifted across its edges (rounding to 8 bits aside)
    assert plain > 20  # the control: zero padding makes borders, which do not move with the noise


def test_the_convolutions_are_circular_only_during_the_run(engine, tiny_safetensors):
    seen: list[set[str]] = []

    def on_progress(event: object) -> None:
        seen.append({conv.padding_mode for conv in _convs(engine, tiny_safetensors)})

    engine.generate(_params(tiny_safetensors, tiling=True), progress=on_progress, save=False)
    assert seen and all(modes == {"circular"} for modes in seen)
    assert {conv.padding_mode for conv in _convs(engine, tiny_safetensors)} == {"zeros"}
    engine.generate(_params(tiny_safetensors), progress=on_progress, save=False)
    assert seen[-1] == {"zeros"}  # a run without tiling is not touched


@pytest.mark.parametrize("how", ["interrupted", "failed"])
def test_a_run_that_ends_badly_leaves_zero_padding(engine, tiny_safetensors, how):
    cancel = Cancel()

    def on_progress(event: object) -> None:
        if how == "interrupted":
            cancel.interrupt.set()
        else:
            raise RuntimeError("a bug in a callback")

    with pytest.raises(Exception):  # noqa: B017 (Interrupted or the callback's error)
        engine.generate(_params(tiny_safetensors, tiling=True), progress=on_progress, cancel=cancel, save=False)
    assert {conv.padding_mode for conv in _convs(engine, tiny_safetensors)} == {"zeros"}


def test_infotext_records_tiling_and_reads_it_back(engine, tiny_safetensors):
    text = engine.generate(_params(tiny_safetensors, tiling=True, steps=1), save=False).images[0].infotext
    assert ", Tiling: True, " in text
    assert decode_infotext(text).tiling is True
    plain = engine.generate(_params(tiny_safetensors, steps=1), save=False).images[0].infotext
    assert "Tiling" not in plain and decode_infotext(plain).tiling is False

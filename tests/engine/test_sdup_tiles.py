"""The SD upscale script on the demo model: progress counts its tiles, an interrupt keeps the
tiles finished (the rest stay as upscaled), a skipped tile stays as upscaled."""

from __future__ import annotations

import numpy as np
import pytest
from engine_runner import engine_for, runner_workspace
from PIL import Image

from emaki.demo.faces import FaceAttributes, draw_face
from emaki.engine import Cancel
from emaki.engine.sd_upscale import sd_upscale
from emaki.errors import Interrupted
from emaki.params import GenerationParams

PARAMS = GenerationParams.create(prompt="1girl, blue hair", seed=3, steps=2, width=64, height=64,
                                 sampler_name="Euler", denoising_strength=0.6)


def _face() -> Image.Image:
    return draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white")).resize((64, 64)).convert("RGB")


def _upscaled() -> np.ndarray:
    return np.asarray(_face().resize((128, 128), Image.Resampling.LANCZOS), dtype=np.int16)


def _run(progress=None, cancel=None, **fields):
    return sd_upscale(engine_for(runner_workspace()), PARAMS.updated(**fields), _face(), upscaler="Lanczos",
                      scale=2, overlap=0, progress=progress, cancel=cancel)


def test_progress_counts_the_tiles_of_every_pass():
    seen: set[tuple[int, int]] = set()
    result = _run(lambda event: seen.add((event.batch, event.batches)), n_iter=2)
    assert seen == {(tile, 8) for tile in range(8)}  # 4 tiles of 64x64, twice
    assert [image.image.size for image in result.images] == [(128, 128)] * 2


def test_an_interrupt_keeps_the_finished_tiles():
    cancel = Cancel()

    def on_progress(event) -> None:
        if event.batch == 2:
            cancel.interrupt.set()

    with pytest.raises(Interrupted) as raised:
        _run(on_progress, cancel)
    images = raised.value.result.images  # type: ignore[attr-defined]
    assert len(images) == 1 and "SD upscale overlap: 0" in images[0].infotext
    picture, upscaled = np.asarray(images[0].image, dtype=np.int16), _upscaled()
    assert np.abs(picture[:64] - upscaled[:64]).mean() > 2  # the first row of tiles was redrawn
    assert np.array_equal(picture[64:], upscaled[64:])  # the tiles not reached stay as upscaled


def test_a_skipped_tile_stays_as_upscaled():
    cancel = Cancel()

    def on_progress(event) -> None:
        if event.batch == 1:
            cancel.skip.set()

    picture = np.asarray(_run(on_progress, cancel).images[0].image, dtype=np.int16)
    upscaled = _upscaled()
    assert np.array_equal(picture[:64, 64:], upscaled[:64, 64:])
    assert np.abs(picture[:64, :64] - upscaled[:64, :64]).mean() > 2

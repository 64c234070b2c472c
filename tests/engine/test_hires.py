"""Hires fix on the demo model: sizes, A1111's step arithmetic, infotext round trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emaki.errors import ParamsError
from engine_runner import generate
from emaki.engine.hires import hires_steps, target_size
from emaki.infotext import parse_infotext
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams


def hires(**fields):
    base = {"prompt": "1girl, blonde hair", "seed": 3, "steps": 6, "enable_hr": True, "hr_second_pass_steps": 4}
    return generate(GenerationParams.create(**(base | fields)), save=False)


@pytest.mark.parametrize("fields, size", [
    ({}, (128, 128)),
    ({"hr_scale": 1.5}, (96, 96)),
    ({"hr_resize_x": 96}, (96, 96)),
    ({"hr_resize_x": 128, "hr_resize_y": 64}, (128, 64)),
    ({"width": 64, "height": 32, "hr_resize_y": 64}, (128, 64)),  # one side given: aspect kept
])
def test_target_size(fields, size):
    params = GenerationParams.create(**({"width": 64, "height": 64, "enable_hr": True} | fields))
    assert target_size(params) == size


@pytest.mark.parametrize("fields", [{"hr_scale": 8}, {"height": 512, "hr_resize_y": 4096}])
def test_a_hires_size_over_the_side_limit_is_refused_before_anything_runs(fields):
    fields = {"width": 1024, "height": 1024} | fields
    with pytest.raises(ParamsError, match="hires size .* over 4096 pixels per side"):
        target_size(GenerationParams.create(enable_hr=True, **fields))
    with pytest.raises(ParamsError, match="hr_scale"):
        hires(**fields)


@pytest.mark.parametrize("steps, hr_steps, strength, expected", [
    (20, 0, 0.7, (28, 19)),  # A1111 passes the steps explicitly: schedule int(20 / 0.7), 20 of it run
    (20, 10, 0.5, (20, 9)),
    (20, 10, 1.0, (10, 9)),  # 0.999 cap: int(10 / 0.999) = 10
])
def test_second_pass_step_arithmetic(steps, hr_steps, strength, expected):
    params = GenerationParams.create(steps=steps, hr_second_pass_steps=hr_steps, denoising_strength=strength,
                                     enable_hr=True)
    assert hires_steps(params) == expected


def test_hires_image_infotext_and_reproduction():
    result = hires(denoising_strength=0.4)
    image = result.images[0]
    assert image.image.size == (128, 128)
    text = image.infotext
    assert "Size: 64x64," in text  # the first pass's size, as A1111 writes it
    assert "Denoising strength: 0.4, " in text
    assert "Hires upscale: 2, Hires steps: 4, Hires upscaler: Latent, " in text
    again = generate(decode_infotext(text), save=False).images[0]
    assert np.array_equal(np.asarray(again.image), np.asarray(image.image))


def test_strength_decides_how_far_the_second_pass_moves():
    base = generate(GenerationParams.create(prompt="1girl, blonde hair", seed=3, steps=6), save=False).images[0]
    upscaled = np.asarray(base.image.resize((128, 128), Image.Resampling.LANCZOS), dtype=np.float32)

    def change(strength: float) -> float:
        image = hires(denoising_strength=strength, hr_upscaler="Lanczos").images[0].image
        return float(np.abs(np.asarray(image, dtype=np.float32) - upscaled).mean())

    assert change(0.02) < change(0.5)


def test_hires_refusals(tmp_path):
    with pytest.raises(ParamsError, match="hr_upscaler"):
        hires(hr_upscaler="R-ESRGAN 4x+")
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), "white").save(init)
    with pytest.raises(ParamsError, match="cannot be combined with init_image"):
        hires(init_image=str(init))


def test_cli_hires(tmp_path):
    from emaki.cli import main

    out = tmp_path / "out"
    main(["generate", "1girl, blonde hair", "--hires", "--hr-scale", "1.5", "--hr-steps", "2", "--steps", "3",
          "--denoise", "0.4", "--hr-upscaler", "Lanczos", "--seed", "1", "--out", str(out)])
    [png] = out.glob("*.png")
    image = Image.open(png)
    assert image.size == (96, 96)
    assert "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Lanczos" in image.info["parameters"]

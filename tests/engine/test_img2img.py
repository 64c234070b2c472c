"""img2img on the demo model: strength decides how much is redrawn; A1111's step arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emaki.demo import describe
from emaki.demo.faces import FaceAttributes, draw_face
from emaki.errors import ParamsError
from engine_runner import generate
from emaki.engine.img2img import fit_image
from emaki.params import GenerationParams
from emaki.sampling import get_sampler, img2img_sigmas, model_sigmas, sigmas_for
from emaki.sampling.schedules import sd1_alphas_cumprod

PROMPT = "1girl, solo, long hair, blue hair, blue eyes, smile, white background"


@pytest.fixture
def red_face(tmp_path):
    """A training-style face with red hair, saved as a plain PNG (no parameters)."""
    attrs = FaceAttributes(hair_color="red", hair_length="long hair", eye_color="blue", expression="smile",
                           background="white")
    path = tmp_path / "red.png"
    draw_face(attrs).save(path)
    return path


def img2img(path, strength, **fields):
    params = GenerationParams.create(**({"prompt": PROMPT, "seed": 7, "steps": 20, "init_image": str(path),
                                         "denoising_strength": strength} | fields))
    return generate(params, save=False)


def test_strength_decides_how_much_is_redrawn(red_face):
    original = np.asarray(Image.open(red_face).convert("RGB"), dtype=np.float32)
    green = PROMPT.replace("blue hair", "green hair")
    low = img2img(red_face, 0.2, prompt=green, batch_size=4).images
    high = img2img(red_face, 1.0, prompt=green, batch_size=4).images
    assert [describe(g.image)["hair_color"] for g in low] == ["red"] * 4  # little noise: the picture stays
    assert sum(describe(g.image)["hair_color"] == "green" for g in high) >= 3  # all noise: the prompt decides

    def change(images):
        return np.mean([np.abs(np.asarray(g.image, dtype=np.float32) - original).mean() for g in images])

    assert change(low) < 20 and change(high) > 2 * change(low)


def test_same_seed_same_image_and_infotext(red_face):
    first, second = img2img(red_face, 0.6), img2img(red_face, 0.6)
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(second.images[0].image))
    text = first.images[0].infotext
    assert "Size: 64x64" in text and "Denoising strength: 0.6, " in text
    assert "Denoising strength" not in generate(GenerationParams.create(prompt="1girl", steps=2, seed=1),
                                                save=False).images[0].infotext


def test_size_defaults_to_the_image_rounded_to_the_model(tmp_path, red_face):
    odd = tmp_path / "odd.png"
    Image.open(red_face).resize((75, 61)).save(odd)
    result = img2img(odd, 0.5, steps=4)
    assert result.images[0].image.size == (72, 56) and (result.params.width, result.params.height) == (72, 56)
    resized = img2img(odd, 0.5, steps=4, width=64, height=32, resize_mode="crop and resize")
    assert resized.images[0].image.size == (64, 32)


def test_unreadable_init_image_names_the_field(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ParamsError, match="init_image"):
        img2img(bad, 0.5)
    with pytest.raises(ParamsError, match="init_image"):
        img2img(tmp_path / "missing.png", 0.5)


@pytest.mark.parametrize("sampler, steps, strength, runs", [
    ("Euler a", 20, 0.75, 16),  # t_enc = 15: sigmas[4:], 16 steps (A1111 setup_img2img_steps)
    ("Euler a", 20, 1.0, 20),  # 0.999 cap: t_enc = 19, the whole schedule
    ("DPM++ 2M", 10, 0.5, 6),
    ("DPM2", 10, 0.5, 6),  # discards the penultimate sigma: still 11 sigmas for 10 steps
    ("DDIM", 20, 0.75, 15),  # timestep samplers run t_enc timesteps
    ("DDIM", 20, 0.01, 1),  # at least one
])
def test_img2img_step_arithmetic_matches_a1111(sampler, steps, strength, runs):
    spec = get_sampler(sampler)
    sigmas = sigmas_for(spec, "Automatic", steps, model_sigmas(sd1_alphas_cumprod()))
    start, schedule = img2img_sigmas(spec, sigmas, steps, strength)
    steps_run = len(schedule) - (0 if spec.timesteps else 1)
    assert steps_run == runs
    if spec.timesteps:
        t_enc = max(1, int(min(strength, 0.999) * steps))
        assert float(start) == float(sigmas[len(sigmas) - 1 - t_enc]) > float(schedule[0])
    else:
        assert float(start) == float(schedule[0]) and float(schedule[-1]) == 0.0


def test_resize_modes():
    image = Image.new("RGB", (100, 50), "red")
    image.paste(Image.new("RGB", (50, 50), "blue"), (50, 0))
    assert fit_image(image, 64, 64, "just resize").size == (64, 64)
    cropped = fit_image(image, 64, 64, "crop and resize")
    assert cropped.size == (64, 64)
    assert cropped.getpixel((2, 32))[0] > 200 and cropped.getpixel((61, 32))[2] > 200  # centre kept, sides cut
    filled = fit_image(image, 64, 64, "resize and fill")
    assert filled.size == (64, 64) and filled.getpixel((2, 2))[0] > 200  # bars take the edge colour
    with pytest.raises(ParamsError, match="resize_mode"):
        fit_image(image, 64, 64, "stretch")


def test_cli_img2img(tmp_path, red_face, capsys):
    from emaki.cli import main

    out = tmp_path / "out"
    main(["img2img", str(red_face), PROMPT, "--denoise", "0.9", "--seed", "3", "--steps", "8",
          "--negative", "red hair", "--out", str(out)])
    [png] = out.glob("*.png")
    text = Image.open(png).info["parameters"]
    assert "Negative prompt: red hair\nSteps: 8," in text and "Denoising strength: 0.9" in text
    assert str(png) in capsys.readouterr().out

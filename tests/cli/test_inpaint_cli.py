"""`emaki inpaint IMAGE MASK PROMPT` and the inpainting options of `emaki generate`, in process."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import run_cli as run
from PIL import Image

from emaki.demo import describe
from emaki.demo.faces import HAIR_COLORS, FaceAttributes, draw_face

PROMPT = "1girl, solo, long hair, blue hair, blue eyes, smile, white background"


@pytest.fixture
def face_and_mask(tmp_path):
    face = draw_face(FaceAttributes("red", "long hair", "blue", "smile", "white"))
    hair = np.abs(np.asarray(face, dtype=np.int32) - np.array(HAIR_COLORS["red"])).sum(-1) < 60
    face.save(tmp_path / "red.png")
    Image.fromarray((hair * 255).astype(np.uint8)).save(tmp_path / "hair.png")
    Image.fromarray((~hair * 255).astype(np.uint8)).save(tmp_path / "rest.png")
    return tmp_path / "red.png", tmp_path / "hair.png", tmp_path / "rest.png", hair


def test_inpaint_repaints_the_masked_hair_and_keeps_the_rest(tmp_path, face_and_mask, capsys):
    face, hair_file, _, hair = face_and_mask
    out = tmp_path / "out"
    code, printed, err = run(capsys, "inpaint", str(face), str(hair_file), PROMPT, "--denoise", "0.9",
                             "--mask-blur", "0", "--fill", "original", "--area", "only-masked", "--padding", "8",
                             "--seed", "3", "--steps", "12", "--out", str(out))
    assert code == 0, err
    [png] = out.glob("*.png")
    assert str(png) in printed
    made, original = np.asarray(Image.open(png).convert("RGB")), np.asarray(Image.open(face))
    assert describe(Image.open(png))["hair_color"] == "blue"
    assert np.array_equal(made[~hair], original[~hair])
    assert "Denoising strength: 0.9, RNG: CPU, Inpaint area: Only masked, Masked area padding: 8, Version" in \
        Image.open(png).info["parameters"]


def test_generate_from_an_inpainted_png_makes_it_again(tmp_path, face_and_mask, capsys):
    face, _, rest_file, _ = face_and_mask
    out = tmp_path / "out"
    code, _, err = run(capsys, "inpaint", str(face), str(rest_file), PROMPT, "--invert", "--fill", "latent noise",
                       "--mask-blur", "2", "--noise-multiplier", "0.8", "--seed", "5", "--steps", "3",
                       "--out", str(out))
    assert code == 0, err
    [first] = out.glob("*.png")
    text = Image.open(first).info["parameters"]
    assert "Mask mode: Inpaint not masked, Mask blur: 2, Masked content: latent noise" in text
    assert "Noise multiplier: 0.8" in text
    code, _, err = run(capsys, "generate", "--from", str(first), "--init-image", str(face), "--mask", str(rest_file),
                       "--out", str(out))
    assert code == 0, err
    second = out / f"00001-{first.stem.split('-')[1]}.png"
    assert Image.open(second).info["parameters"] == text
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


@pytest.mark.parametrize("option, value", [("--fill", "glitter"), ("--area", "most")])
def test_an_unknown_choice_is_one_line_naming_the_option(tmp_path, face_and_mask, capsys, option, value):
    face, hair_file, _, _ = face_and_mask
    code, _, err = run(capsys, "inpaint", str(face), str(hair_file), PROMPT, option, value, "--out",
                       str(tmp_path / "out"))
    assert code == 2 and err.strip().count("\n") == 0 and option in err
    assert not (tmp_path / "out").exists()

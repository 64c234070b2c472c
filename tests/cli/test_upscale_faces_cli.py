"""`emaki upscale --gfpgan-visibility V` (A1111's extras field): faces restored after the upscale,
or alone (no `--model`, or `--scale 1`); the extras text says so; a missing file is named on one
line before any image is written. The detector and GFPGAN are stand-ins (tests/faces/ tests them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from face_stand_ins import FACE_FILES, face_at, put_face_files, use_stand_ins
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emaki.workspace import default_home

PARAMETERS = "1girl, smile\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 128x96"
# A face in the middle of the 128×96 picture, its eyes 19 pixels apart.
FACE = face_at((32, 16, 96, 80), 0.15, (64.0, 48.0))


def _picture(path: Path) -> Image.Image:
    rng = np.random.default_rng(0)
    picture = Image.fromarray(np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8), "RGB")
    info = PngInfo()
    info.add_text("parameters", PARAMETERS)
    picture.save(path, pnginfo=info)
    return picture


def _put_files(*names: str) -> None:
    put_face_files(default_home(os.environ) / "face-restorers", *names)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both files in EMAKI_HOME/face-restorers; the detector finds FACE, "GFPGAN" inverts the colours."""
    _put_files(*FACE_FILES)
    use_stand_ins(monkeypatch, lambda picture: [FACE])


def _upscale(capsys, source: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", str(source), *args, "--threads", "1")


def test_faces_alone_half_visible_keep_the_size_and_say_so(capsys, tmp_path, stand_ins):
    source = tmp_path / "girl.png"
    original = np.asarray(_picture(source)).astype(int)
    out = tmp_path / "out"
    code, stdout, stderr = _upscale(capsys, source, "--gfpgan-visibility", "0.5", "--out", str(out))
    assert code == 0, stderr
    assert stdout.split() == [str(out / "girl.png")]
    made = Image.open(out / "girl.png")
    assert made.size == (128, 96)
    assert made.info["extras"] == "GFPGAN visibility: 0.5"
    assert made.info["parameters"] == PARAMETERS
    result = np.asarray(made.convert("RGB")).astype(int)
    nose = (52, 68)  # (row, column) in a block's middle, next to the face's nose
    assert abs(result[nose] - (original[nose] + 255 - original[nose]) / 2).max() <= 2  # half inverted
    assert (result[:4] == original[:4]).all()  # far from the face: untouched


def test_scale_1_with_a_resampler_is_faces_alone_too(capsys, tmp_path, stand_ins):
    source = tmp_path / "girl.png"
    original = np.asarray(_picture(source)).astype(int)
    out = tmp_path / "out"
    code, _, stderr = _upscale(capsys, source, "--model", "Lanczos", "--scale", "1", "--gfpgan-visibility", "1",
                               "--out", str(out))
    assert code == 0, stderr
    made = Image.open(out / "girl.png")
    assert made.info["extras"] == "Postprocess upscale by: 1, Postprocess upscaler: Lanczos, GFPGAN visibility: 1"
    result = np.asarray(made.convert("RGB")).astype(int)
    assert abs(result[52, 68] - (255 - original[52, 68])).max() <= 2  # fully inverted
    assert (result[:4] == original[:4]).all()


def test_faces_are_restored_after_the_upscale(capsys, tmp_path, stand_ins, monkeypatch):
    import emaki.engine.faces as engine_faces

    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(engine_faces, "find_faces", lambda detector, picture: seen.append(picture.size) or [])
    source = tmp_path / "girl.png"
    _picture(source)
    out = tmp_path / "out"
    code, _, stderr = _upscale(capsys, source, "--model", "Lanczos", "--scale", "2", "--gfpgan-visibility", "1",
                               "--out", str(out))
    assert code == 0, stderr
    assert seen == [(256, 192)]  # A1111's order: the upscale, then the faces
    made = Image.open(out / "girl.png")
    assert made.size == (256, 192)
    assert made.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, GFPGAN visibility: 1"


@pytest.mark.parametrize("present", [(), ("GFPGANv1.4.pth",)])
def test_missing_files_are_named_on_one_line_and_nothing_is_written(capsys, tmp_path, present):
    _put_files(*present)
    source = tmp_path / "girl.png"
    _picture(source)
    out = tmp_path / "out"
    code, stdout, stderr = _upscale(capsys, source, "--model", "Lanczos", "--gfpgan-visibility", "1",
                                    "--out", str(out))
    assert code == 2
    assert "--gfpgan-visibility: face restoration needs" in stderr
    assert "detection_Resnet50_Final.pth" in stderr and str(default_home(os.environ) / "face-restorers") in stderr
    assert ("GFPGANv1.4.pth found there" if present else "GFPGANv1.4.pth (GFPGAN)") in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    ([], "--model: name an upscaler"),
    (["--scale", "2", "--gfpgan-visibility", "1"], "--scale: enlarging needs an upscaler (--model)"),
    (["--model", "Lanczos", "--gfpgan-visibility", "1.5"], "--gfpgan-visibility"),
])
def test_what_cannot_run_is_refused(capsys, tmp_path, args, message):
    source = tmp_path / "girl.png"
    _picture(source)
    code, _, stderr = _upscale(capsys, source, *args)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr

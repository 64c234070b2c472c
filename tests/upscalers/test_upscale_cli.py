"""`emaki upscale` on a file and a folder: sizes, A1111's extras text, refusals on one line."""

from __future__ import annotations

import pytest
from cli_runner import run_cli as run
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS = "1girl, smile\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 40x24"


def test_upscale_a_file_keeps_its_parameters_and_adds_the_extras_text(capsys, home_upscalers, tmp_path):
    source = tmp_path / "in" / "girl.png"
    source.parent.mkdir()
    info = PngInfo()
    info.add_text("parameters", PARAMETERS)
    Image.new("RGB", (40, 24), (240, 200, 180)).save(source, pnginfo=info)
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "upscale", str(source), "--model", "4x-Tiny", "--scale", "2", "--tile", "16",
                               "--overlap", "4", "--out", str(out))
    assert code == 0, stderr
    assert stdout.split() == [str(out / "girl.png")]
    made = Image.open(out / "girl.png")
    assert made.size == (80, 48)
    assert made.info["parameters"] == PARAMETERS
    assert made.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: 4x-Tiny"
    assert [p.name for p in out.iterdir()] == ["girl.png"]  # no temp files left behind


def test_upscale_a_folder_with_a_model_path(capsys, home_upscalers, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "a.png")
    Image.new("RGB", (24, 16), "blue").save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "upscale", str(folder), "--model", str(home_upscalers / "2x-Compact.pth"),
                               "--scale", "1.5", "--out", str(out))
    assert code == 0, stderr
    assert stdout.split() == [str(out / "a.png"), str(out / "b.png")]
    assert Image.open(out / "a.png").size == (24, 24)
    assert Image.open(out / "b.png").size == (32, 24)  # 36x24 rounded down to multiples of 8
    assert Image.open(out / "b.png").info["extras"] == "Postprocess upscale by: 1.5, Postprocess upscaler: 2x-Compact"


@pytest.mark.parametrize("args, message", [
    (["--model", "R-ESRGAN 4x+"], "--model: 'R-ESRGAN 4x+' needs the file RealESRGAN_x4plus.pth"),
    (["--model", "4x-Nope"], "--model: '4x-Nope' is not an upscaler emaki has"),
    (["--model", "4x-Tiny", "--tile", "8", "--overlap", "8"], "overlap: expected 0 or more and less than"),
    (["--model", "4x-Tiny", "--out", "SOURCE_FOLDER"], "is one of the source images"),
])
def test_refusals_are_one_line_with_exit_2(capsys, home_upscalers, tmp_path, args, message):
    source = tmp_path / "girl.png"
    Image.new("RGB", (16, 16)).save(source)
    args = [str(tmp_path) if a == "SOURCE_FOLDER" else a for a in args]
    code, _, stderr = run(capsys, "upscale", str(source), *args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr

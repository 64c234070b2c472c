"""`emaki generate --tiling`: the infotext says `Tiling: True`, and `--from` makes the same
seamless picture again (it reads the field back)."""

from __future__ import annotations

import numpy as np
from cli_runner import run_cli
from PIL import Image

from emaki.cli.generate import params_from_options
from emaki.workspace import Workspace


def test_generate_tiling_and_regenerate_it_from_the_png(tmp_path, tiny_safetensors, capsys):
    out = tmp_path / "out"
    common = ("--model", str(tiny_safetensors), "--out", str(out))
    code, _, err = run_cli(capsys, "generate", "1girl", "--tiling", "--steps", "2", "--seed", "9", "--size", "32x32",
                           "--sampler", "Euler", *common)
    assert code == 0, err
    first = out / "00000-9.png"
    assert "Tiling: True" in Image.open(first).info["parameters"]
    assert params_from_options({"from_image": first}, Workspace(tmp_path)).tiling is True

    code, _, err = run_cli(capsys, "generate", "--from", str(first), *common)
    assert code == 0, err
    again = out / "00001-9.png"
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    code, _, err = run_cli(capsys, "generate", "1girl", "--steps", "2", "--seed", "9", "--size", "32x32",
                           "--sampler", "Euler", *common)
    plain = out / "00002-9.png"
    assert code == 0 and not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(plain)))
    assert "Tiling" not in Image.open(plain).info["parameters"]

"""`restore_faces` in a generation: refused before any step when a file is missing (naming it),
else every decoded picture's faces restored before saving and `Face restoration: GFPGAN` in the
infotext, read back by `--from`. The detector and GFPGAN are stand-ins (tests/faces/ tests them)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cli_runner import run_cli
from engine_runner import generate
from face_stand_ins import FACE_FILES, face_at, put_face_files, use_stand_ins

from emaki.errors import ParamsError
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams
from emaki.workspace import default_home

FACE = face_at((12, 12, 52, 52), 0.1, (32.0, 32.0))


def _params(model, **changes) -> GenerationParams:
    return GenerationParams(prompt="1girl", model=str(model), steps=2, width=64, height=64, seed=3,
                            sampler_name="Euler", **changes)


def test_restore_faces_without_the_files_is_refused_naming_them(tiny_safetensors):
    with pytest.raises(ParamsError, match=r"restore_faces: .*GFPGANv1\.4\.pth.*detection_Resnet50_Final\.pth"):
        generate(_params(tiny_safetensors, restore_faces=True), save=False)


def test_restore_faces_restores_every_picture_and_says_so(tiny_safetensors, monkeypatch):
    put_face_files(default_home(os.environ) / "face-restorers", *FACE_FILES)
    use_stand_ins(monkeypatch, lambda picture: [FACE])
    plain = generate(_params(tiny_safetensors), save=False).images[0]
    restored = generate(_params(tiny_safetensors, restore_faces=True), save=False).images[0]
    before, after = np.asarray(plain.image).astype(int), np.asarray(restored.image).astype(int)
    assert abs(after[32, 32] - (255 - before[32, 32])).max() <= 24  # the face's middle, inverted
    assert (after[:3] == before[:3]).all()  # far from the face: the same pixels
    assert "Face restoration: GFPGAN, Size: 64x64" in restored.infotext
    assert "Face restoration" not in plain.infotext
    assert decode_infotext(restored.infotext).restore_faces


def test_the_cli_flag_asks_for_it_and_names_the_missing_files(tiny_safetensors, capsys):
    code, _, stderr = run_cli(capsys, "generate", "1girl", "--model", str(tiny_safetensors), "--steps", "1",
                              "--size", "64x64", "--restore-faces", "--threads", "1")
    assert code != 0 and "restore_faces:" in stderr and "detection_Resnet50_Final.pth" in stderr
    assert "Traceback" not in stderr

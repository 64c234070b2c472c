"""The `emaki` command end to end, as a user runs it (subprocess: real exit codes and output)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def emaki(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if env_home is not None:
        env["EMAKI_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "emaki", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_generate_info_and_regenerate_from_png(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    made = emaki("generate", "masterpiece, best quality, 1girl, silver hair, smile", "--negative",
                 "lowres, bad anatomy", "--model", str(tiny_ckpt), "--sampler", "Euler a", "--steps", "3",
                 "--cfg", "7", "--seed", "1234", "--size", "32x48", "--clip-skip", "2", "--out", str(out))
    assert made.returncode == 0, made.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-1234.png"]
    assert Image.open(files[0]).size == (32, 48)

    info = emaki("info", str(files[0]))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.strip().splitlines()
    assert lines[0] == "masterpiece, best quality, 1girl, silver hair, smile"
    assert lines[1] == "Negative prompt: lowres, bad anatomy"
    assert lines[2].startswith("Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
                               "Size: 32x48, Model hash: ")
    assert "Model: tiny, Clip skip: 2, RNG: CPU, Version: emaki" in lines[2]

    again = emaki("generate", "--from", str(files[0]), "--model", str(tiny_ckpt), "--out", str(out))
    assert again.returncode == 0, again.stderr
    second = out / "00001-1234.png"
    assert np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(second)))
    assert Image.open(second).info["parameters"] == Image.open(files[0]).info["parameters"]


def test_default_output_folder_is_under_emaki_home(tmp_path, tiny_safetensors):
    made = emaki("generate", "a", "--model", str(tiny_safetensors), "--steps", "1", "--seed", "5",
                 "--size", "32x32", env_home=tmp_path)
    assert made.returncode == 0, made.stderr
    [png] = list((tmp_path / "outputs").glob("*/00000-5.png"))
    assert png.parent.name.count("-") == 2  # a date folder


def emaki_in_process(capsys, *args: str) -> tuple[int, str]:
    """The CLI's `main` in this process (no interpreter start-up): exit code and stderr."""
    from emaki.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, tiny_safetensors, capsys):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    cases = {
        ("--model", str(tmp_path / "missing.safetensors")): "missing.safetensors",
        ("--model", str(corrupt)): "corrupt.safetensors",
        ("--model", str(tiny_safetensors), "--sampler", "Euler z"): "Euler z",
        ("--model", str(tiny_safetensors), "--size", "50x64"): "multiple of 8",
        ("--model", str(tiny_safetensors), "--size", "big"): "--size",
        ("--model", str(tiny_safetensors), "--seed", "-7"): "seed",
    }
    for extra, expected in cases.items():
        code, stderr = emaki_in_process(capsys, "generate", "a cat", "--steps", "1", "--out", str(out), *extra)
        assert code == 2, (extra, stderr)
        assert expected in stderr, (extra, stderr)
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() or not any(out.iterdir())


def test_info_on_image_without_parameters(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, stderr = emaki_in_process(capsys, "info", str(plain))
    assert code == 2 and "no generation parameters" in stderr


def test_policy_refusal_exits_3_and_writes_nothing(tmp_path, tiny_safetensors, capsys):
    out = tmp_path / "out"
    code, stderr = emaki_in_process(capsys, "generate", "(l0li:1.2), nude", "--model", str(tiny_safetensors),
                                    "--out", str(out))
    assert code == 3 and "Refused" in stderr and not out.exists()


def test_models_are_found_by_name_in_an_a1111_install(tmp_path, tiny_safetensors, capsys, monkeypatch):
    import shutil

    monkeypatch.delenv("EMAKI_A1111", raising=False)
    install = tmp_path / "stable-diffusion-webui"
    (install / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_safetensors, install / "models" / "Stable-diffusion" / "anything-v3.safetensors")
    out = tmp_path / "out"
    code, stderr = emaki_in_process(capsys, "generate", "1girl", "--model", "anything-v3", "--a1111", str(install),
                                    "--steps", "1", "--seed", "3", "--size", "32x32", "--out", str(out))
    assert code == 0, stderr
    [png] = out.glob("*.png")
    assert "Model: anything-v3" in Image.open(png).info["parameters"]


def test_typos_in_commands_and_options_are_usage_errors_with_a_suggestion(capsys):
    code, stderr = emaki_in_process(capsys, "generat", "a cat")
    assert code == 2 and "No such command 'generat'. Did you mean 'generate'?" in stderr
    assert "Traceback" not in stderr
    code, stderr = emaki_in_process(capsys, "generate", "a cat", "--stepz", "3")
    assert code == 2 and "No such option: --stepz" in stderr and "--steps" in stderr
    code, stderr = emaki_in_process(capsys, "train", "lora", "x", "--data", ".", "--steps", "1", "--rnk", "3")
    assert code == 2 and "--rank" in stderr


def test_from_a_png_never_opens_a_path_or_a_hub_id_it_names(tmp_path, capsys, monkeypatch):
    from PIL.PngImagePlugin import PngInfo

    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "home"))
    for named in ("/etc/passwd", "someone/some-model", "../../models/x", "missing-model"):
        info = PngInfo()
        info.add_text("parameters", f"1girl\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: {named}")
        crafted = tmp_path / "crafted.png"
        Image.new("RGB", (8, 8)).save(crafted, pnginfo=info)
        code, stderr = emaki_in_process(capsys, "generate", "--from", str(crafted), "--out", str(tmp_path / "out"))
        assert code == 2 and f"names the model {named!r}, which is not in the workspace" in stderr, stderr
    assert not (tmp_path / "out").exists()

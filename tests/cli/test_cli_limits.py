"""The CLI reads the same `GenerationParams` as the HTTP API, so the same limits hold (issue 16,
item 12): huge integers, non-finite numbers, over-long prompts, an input image too large to decode
and a PNG asking for huge noise are one-line errors with exit code 2, before anything runs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI's `main` in this process: exit code and stderr."""
    from emaki.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def one_line_error(code: int, stderr: str, *expected: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, stderr[:1000]
    for text in expected:
        assert text in stderr, stderr


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1-bit black PNG of `width`x`height` (a few KB on disk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(bytes(1 + (width + 7) // 8) * height, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("flags, expected", [
    (("--seed", str(10**40)), "seed"),
    (("--ensd", str(10**40)), "eta_noise_seed_delta"),
    (("--hypernetwork-strength", "nan"), "hypernetwork_strength"),
    (("--cfg", "inf"), "cfg_scale"),
    (("--denoise", "nan"), "denoising_strength"),
    (("--hires", "--hr-scale", "inf"), "hr_scale"),
])
def test_out_of_range_numbers_are_one_line_errors(tmp_path: Path, tiny_safetensors: Path,
                                                  capsys: pytest.CaptureFixture[str], flags: tuple[str, ...],
                                                  expected: str) -> None:
    out = tmp_path / "out"
    code, stderr = run_cli(capsys, "generate", "a cat", "--model", str(tiny_safetensors), "--steps", "1",
                           "--size", "32x32", "--out", str(out), *flags)
    one_line_error(code, stderr, expected)
    assert not out.exists()


def test_a_number_that_is_not_an_integer_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = run_cli(capsys, "generate", "a cat", "--seed", "1e40")
    assert code == 2 and "--seed" in stderr and "Traceback" not in stderr


def test_an_over_long_prompt_is_refused_without_echoing_it(tmp_path: Path, tiny_safetensors: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = run_cli(capsys, "generate", "masterpiece, " * 10_000, "--model", str(tiny_safetensors),
                           "--out", str(tmp_path / "out"))
    one_line_error(code, stderr, "prompt", "32768", "130,000 characters")


def test_an_init_image_too_large_to_decode_is_refused_from_its_header(tmp_path: Path, tiny_safetensors: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    big = png_declaring(tmp_path / "big.png", 4104, 4096)  # a few KB; 16.8 M pixels decoded
    code, stderr = run_cli(capsys, "generate", "a cat", "--model", str(tiny_safetensors), "--init-image", str(big),
                           "--size", "32x32", "--steps", "1", "--out", str(tmp_path / "out"))
    one_line_error(code, stderr, "init_image", "big.png", "4104x4096")


def test_a_png_asking_for_huge_noise_is_refused(tmp_path: Path, tiny_safetensors: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 32x32, "
                                "Seed resize from: 20000x20000")
    crafted = tmp_path / "crafted.png"
    Image.new("RGB", (8, 8)).save(crafted, pnginfo=info)
    code, stderr = run_cli(capsys, "generate", "--from", str(crafted), "--model", str(tiny_safetensors),
                           "--out", str(tmp_path / "out"))
    one_line_error(code, stderr, "seed_resize_from_w")

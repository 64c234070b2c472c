"""Hostile files on the command line (issue 16, item 8): one line naming the file, exit code 2,
never a traceback; paths are printed as they are (rich would turn `:x:` into an emoji)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hostile_files import png_bytes, text_chunk, within, ztext_chunk
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS = b"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"


def emaki_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's `main` in this process: exit code, stdout and stderr."""
    from emaki.cli import main

    try:
        within(120, main, list(args))
    except SystemExit as stop:
        code = int(stop.code or 0)
    else:
        code = 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize(("name", "body", "expected"), [
    ("bomb.png", png_bytes(100_000, 100_000, chunks=[text_chunk("parameters", PARAMETERS)]),
     "100000×100000 pixels"),
    ("zbomb.png", png_bytes(8, 8, chunks=[ztext_chunk("parameters", b"a" * 20_000_000)]), "zTXt"),
    ("truncated.png", png_bytes(8, 8)[:20], "not a readable image"),
])
def test_info_on_hostile_pngs_is_one_line(tmp_path, capsys, name, body, expected):
    path = tmp_path / name
    path.write_bytes(body)
    code, _, err = emaki_in_process(capsys, "info", str(path))
    one_error_line(code, err, name, expected)


def test_info_refuses_a_100_mb_text_chunk_without_reading_it(tmp_path, capsys):
    path = tmp_path / "chatty.png"
    path.write_bytes(png_bytes(8, 8, chunks=[text_chunk("parameters", PARAMETERS + b" " * 100_000_000)]))
    code, _, err = emaki_in_process(capsys, "info", str(path))
    one_error_line(code, err, "chatty.png", "a tEXt chunk of 100,000,")


def test_info_still_reads_parameters_of_big_and_plain_images(tmp_path, capsys):
    info = PngInfo()
    info.add_text("parameters", PARAMETERS.decode(), zip=True)
    path = tmp_path / "fine.png"
    Image.new("RGB", (2048, 2048)).save(path, pnginfo=info)
    code, out, err = emaki_in_process(capsys, "info", str(path))
    assert code == 0 and out.startswith("a cat\nSteps: 20"), err


def test_info_on_a_fifo_does_not_wait(tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, _, err = emaki_in_process(capsys, "info", str(fifo))
    one_error_line(code, err, "pipe.png", "FIFO")


def test_generate_with_a_sparse_or_a_demo_ckpt_model_is_one_line(tmp_path, capsys):
    from safetensors.torch import load_file

    from emaki.models.resolve import demo_model_path

    sparse = tmp_path / "sparse.ckpt"
    torch.save({"state_dict": {"w": torch.tensor([[0.0, 1.0]]).to_sparse()}}, sparse)
    code, _, err = emaki_in_process(capsys, "generate", "a cat", "--model", str(sparse), "--steps", "1")
    one_error_line(code, err, "sparse.ckpt", "sparse tensor")
    demo = tmp_path / "demo.ckpt"
    torch.save(load_file(str(demo_model_path())), demo)
    code, _, err = emaki_in_process(capsys, "generate", "a cat", "--model", str(demo), "--steps", "1")
    one_error_line(code, err, "demo.ckpt", "do not build")


def test_the_pickle_refusal_names_the_global(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (eval, ("1",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Evil()}}, evil)
    code, _, err = emaki_in_process(capsys, "generate", "a cat", "--model", str(evil), "--steps", "1")
    one_error_line(code, err, "evil.ckpt", "asks for builtins.eval")
    assert "GLOBAL" not in err


def test_paths_with_colons_are_printed_as_they_are(tmp_path, capsys):
    folder = tmp_path / ":x: :smile:"
    folder.mkdir()
    code, _, err = emaki_in_process(capsys, "info", str(folder / "missing.png"))
    one_error_line(code, err, ":x: :smile:/missing.png")


def test_every_console_prints_emoji_codes_as_text():
    """Each module's rich `Console` keeps `:x:` as text (a path or a prompt may hold it)."""
    import importlib
    import pkgutil

    import emaki.cli

    names = ["emaki.cli"] + [f"emaki.cli.{info.name}" for info in pkgutil.iter_modules(emaki.cli.__path__)]
    assert "emaki.cli.generate" in names
    for name in names:
        module = importlib.import_module(name)
        for attribute in ("console", "err_console"):
            console = getattr(module, attribute, None)
            if console is None:
                continue
            with console.capture() as capture:
                console.print("a :x: b", highlight=False)
            assert capture.get().strip() == "a :x: b", (name, attribute)


def test_models_lists_broken_files_as_skipped(tmp_path, capsys, monkeypatch):
    from hostile_files import broken_entries

    home = Path(os.environ["EMAKI_HOME"])
    broken = broken_entries(home / "hypernetworks", ".pt")
    broken_entries(home / "models", ".safetensors")
    from emaki.cli import main

    try:
        within(60, main, ["models"], unblock=[broken["fifo"]])
    except SystemExit as stop:
        assert not stop.code
    out = capsys.readouterr().out
    assert "fifo  skipped:" in out and "FIFO" in out and "dangling symbolic link" in out

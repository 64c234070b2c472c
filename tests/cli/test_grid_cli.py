"""`emaki grid PROMPT --x ... --y ... [generate options]`, in process, on the demo model."""

from __future__ import annotations

import typer
from cli_runner import run_cli as run
from PIL import Image

from emaki.cli import app, generate, grid


def test_a_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, err = run(capsys, "grid", "1girl, red hair", "--x", "Sampler: Euler a, DPM++ 2M Karras",
                             "--y", "Steps: 2-3", "--size", "64x64", "--seed", "3", "--cfg", "6", "--out", str(out))
    assert code == 0, err
    [grid_file] = printed.split()
    assert grid_file == str(out / "xyz_grid-0000-3.png")
    text = Image.open(grid_file).info["parameters"]
    assert text.startswith("1girl, red hair\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6, Seed: 3")
    assert ('Script: X/Y/Z plot, X Type: Sampler, X Values: "Euler a, DPM++ 2M Karras", Y Type: Steps, '
            'Y Values: 2-3, Version:') in text
    cells = sorted(out.glob("0*.png"))
    assert len(cells) == 4
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in Image.open(cells[1]).info["parameters"]
    assert Image.open(grid_file).width > 128  # the row band of the legend


def test_generate_options_go_anywhere_and_lone_images_are_printed(tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, err = run(capsys, "grid", "--steps", "2", "--size", "64x64", "1girl", "--x", "CFG Scale: 5, 7",
                             "--no-legend", "--lone-images", "--seed", "4", "--out", str(out))
    assert code == 0, err
    lines = printed.split()
    assert lines == [str(out / "xyz_grid-0000-4.png"), str(out / "00000-4.png"), str(out / "00001-4.png")]
    assert Image.open(lines[0]).size == (128, 64)


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    for args, fragment in [
        (["--x", "Steps: 2, lots"], "X: Steps: 'lots' is not a whole number"),
        (["--x", "Checkpoint name: emaki-demo, nowhere"], "no checkpoint named 'nowhere'"),
        (["--x", "Steps 2"], "--x: expected 'AXIS: VALUES'"),
        (["--x", "Steps: 2", "--vary-seeds", "w"], "--vary-seeds: expected x, y or z"),
    ]:
        code, _, err = run(capsys, "grid", "1girl", *args, "--size", "64x64", "--out", str(out))
        assert code == 2 and fragment in err and err.strip().count("\n") == 0, err
    code, _, err = run(capsys, "grid", "1girl", "--x", "Steps: 2", "--no-such-option", "--out", str(out))
    assert code == 2 and "no-such-option" in err
    assert not out.exists()


def test_a_refused_cell_exits_3_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, "grid", "1girl, (l0li:1.2), smile", "--x", "Prompt S/R: smile, nude", "--size", "64x64",
                       "--out", str(out))
    assert code == 3 and "Refused" in err and "grid cell (X Prompt S/R = 'nude')" in err
    assert not out.exists()


def test_every_generate_option_is_read_by_grid():
    command = typer.main.get_command(app).commands["generate"]
    handled = {*generate.OPTION_FIELDS, *generate.INPAINTING_OPTIONS, *generate.OTHER_OPTIONS}
    assert {param.name for param in command.params} == handled


def test_generate_options_build_the_params_as_generate_builds_them(tmp_path):
    from emaki.workspace import Workspace

    given = grid.generate_options(["1girl", "--sampler", "DPM++ 2M", "--steps", "10", "--speed", "fast",
                                   "--gate-step", "2", "--size", "64x96", "--hires", "--batch-count", "2"])
    params = generate.params_from_options(given, Workspace(tmp_path))
    assert (params.prompt, params.sampler_name, params.scheduler, params.steps) == ("1girl", "DPM++ 2M", "Automatic", 10)
    assert (params.width, params.height, params.enable_hr, params.n_iter) == (64, 96, True, 2)
    assert params.gate_step == 2 and params.styles == []  # the option given wins over --speed's preset


def test_the_first_ctrl_c_interrupts_the_grid_and_the_second_stops_at_once():
    import os
    import signal

    from emaki.engine.run import Cancel

    cancel, before = Cancel(), signal.getsignal(signal.SIGINT)
    with grid.interrupt_on_ctrl_c(cancel):
        os.kill(os.getpid(), signal.SIGINT)
        assert cancel.interrupt.is_set()
        assert signal.getsignal(signal.SIGINT) is before  # a second Ctrl+C is Python's KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is before

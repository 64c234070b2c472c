"""`emaki ...` run in this process (its exit code, what it printed), for the CLI tests."""

from __future__ import annotations

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `emaki ARGS`."""
    from emaki.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err

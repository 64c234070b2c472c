"""`emaki serve --executor/--ray-address/--workers`: checked before anything starts, and without
`--executor ray` nothing of Ray loads (the Ray serve tests themselves: test_serve_ray.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cli_runner import run_cli


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "dask"], "--executor: expected local or ray, got 'dask'"),
    (["--ray-address", "auto"], "--ray-address/--workers: only with --executor ray"),
    (["--executor", "ray", "--workers", "0"], "--workers: expected 1 or more, got 0"),
])
def test_executor_options_are_checked_before_serving(capsys: pytest.CaptureFixture[str], args: list[str],
                                                     message: str) -> None:
    code, _, stderr = run_cli(capsys, "serve", "--port", "1", *args)
    assert code == 2 and message in stderr, stderr


@pytest.mark.slow  # a fresh interpreter importing the server: ~20 s on a loaded 2-core machine
def test_the_local_executor_never_imports_ray(tmp_path) -> None:
    """The server on its default executor, started and stopped, with the Ray serve module imported."""
    script = """
import sys
import emaki.jobs.ray_serve
from fastapi.testclient import TestClient
from emaki.server import ServerSettings, create_app
with TestClient(create_app(ServerSettings(threads=1))) as client:
    assert client.get("/api/health").status_code == 200
print("ray" in sys.modules)
"""
    made = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1", EMAKI_HOME=str(tmp_path)))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1] == "False"

"""benchmarks/train.py quality: the protocol of the training targets, run over chosen training seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "train.py"


@pytest.mark.slow  # a subprocess that loads the demo model, trains twice and draws 12 images (~20 s of CPU)
def test_quality_trains_once_per_seed_and_judges_both_prompts() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCHMARK), "quality", "--steps", "2", "--images", "4",
                          "--seeds", "3,4", "--kinds", "hypernetwork", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert [(row[0], row[1]) for row in rows] == [("hypernetwork", "3")] * 2 + [("hypernetwork", "4")] * 2
    assert ["<hypernet:sepiastyle:1>" in row for row in rows] == [True, False, True, False]
    assert all(0.0 <= float(row[-3]) <= 1.0 and row[-1] == "MB" for row in rows)

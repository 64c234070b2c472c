"""`scripts/train_demo.py` runs end to end from scratch (a few steps of each stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_demo_smoke(tmp_path: Path) -> None:
    out = tmp_path / "demo.safetensors"
    cmd = [sys.executable, str(REPO / "scripts/train_demo.py"), "--vae-steps", "2", "--vae-batch", "4",
           "--vae-crop", "32", "--decoder-steps", "2", "--decoder-stop-at", "2", "--decoder-batch", "4",
           "--unet-steps", "2", "--unet-batch", "4", "--colours-steps", "2", "--colours-batch", "4", "--work", str(tmp_path), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    from emaki.models.loader import load_model_uncached

    parts = load_model_uncached(out).components
    assert parts.config.vae["scaling_factor"] > 0
    assert out.stat().st_size < 30 * 1024 * 1024
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["emaki_demo_colours"])["steps"] == 2  # the last stage wrote it

"""`emaki models` lists the upscaler model files as it lists the other model kinds: name,
architecture, scale and file; a file no architecture matches is listed as skipped, with why."""

from __future__ import annotations

import json

from cli_runner import run_cli as run


def test_models_lists_upscalers(capsys, home_upscalers):
    (home_upscalers / "broken.pth").write_bytes(b"not a pickle")
    code, stdout, stderr = run(capsys, "models", "--no-hashes")
    assert code == 0, stderr
    section = "".join(stdout[stdout.index("Upscalers (3)"):].split())  # the console wraps long lines anywhere
    assert section.startswith(f"Upscalers(3)2x-CompactRealESRGANCompact2x{home_upscalers / '2x-Compact.pth'}"
                              f"4x-TinyESRGAN4x{home_upscalers / '4x-Tiny.safetensors'}brokenskipped:")
    assert section.endswith(str(home_upscalers / "broken.pth"))


def test_models_json_has_upscaler_rows(capsys, home_upscalers):
    code, stdout, stderr = run(capsys, "models", "--no-hashes", "--json")
    assert code == 0, stderr
    rows = json.loads(stdout)["upscalers"]
    assert rows == [
        {"name": "2x-Compact", "architecture": "RealESRGAN Compact", "scale": 2, "path": str(home_upscalers / "2x-Compact.pth"),
         "status": "loaded"},
        {"name": "4x-Tiny", "architecture": "ESRGAN", "scale": 4, "path": str(home_upscalers / "4x-Tiny.safetensors"),
         "status": "loaded"},
    ]


def test_models_with_no_upscalers_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAKI_HOME", str(tmp_path / "empty"))
    code, stdout, stderr = run(capsys, "models", "--no-hashes")
    assert code == 0, stderr
    assert "Upscalers (0)\n  (none found)" in stdout

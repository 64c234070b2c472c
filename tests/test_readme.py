"""Every example in the README runs as written: the Python blocks in a fresh interpreter, the
shell blocks in bash, in a scratch folder with its own EMAKI_HOME (a tiny model stands in for
`anything-v3`, a small picture for `photo.png` and a mask for `mask.png`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from emaki.models.checkpoint import save_single_file
from emaki.models.components import build_random_components
from emaki.models.configs import tiny_config

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")) if lang == language]


@pytest.fixture(scope="module")
def stand_in_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model of SD 1.x's layout with an 8x VAE (so 512x768 means 64x96 latents, as
    for the real anything-v3) and attention only at the lowest resolution: seconds per image."""
    config = tiny_config()
    config.unet.update(down_block_types=["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
                       up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"], block_out_channels=[32, 32, 64])
    config.vae.update(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                      block_out_channels=[32, 32, 32, 32])
    path = tmp_path_factory.mktemp("stand-in") / "anything-v3.safetensors"
    return save_single_file(build_random_components(config, seed=0), path, dtype=None)


@pytest.fixture()
def scratch(tmp_path: Path, stand_in_checkpoint: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copy(stand_in_checkpoint, tmp_path / "anything-v3.safetensors")
    Image.new("RGB", (64, 64), (200, 120, 90)).save(tmp_path / "photo.png")
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 4, 48, 28))
    mask.save(tmp_path / "mask.png")
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {"EMAKI_HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    return tmp_path, env


def test_the_readme_has_the_examples_this_test_runs():
    assert len(blocks("python")) >= 2 and len(blocks("bash")) >= 3


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(scratch, index):
    folder, env = scratch
    done = subprocess.run([sys.executable, "-c", blocks("python")[index]], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ".png" in done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(line: str, folder: Path, env: dict[str, str]) -> None:
    """`emaki serve ...` runs until stopped: start it on a free port, see it answer, stop it."""
    port = _free_port()
    command = line.split("#")[0].strip() + f" --port {port}"
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/health")
                if "--api-auth" in command:
                    import base64

                    user = command.split("--api-auth")[1].split()[0]
                    request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
                with urllib.request.urlopen(request, timeout=2) as answer:
                    assert answer.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("index", range(len(blocks("bash"))))
def test_shell_examples_run(scratch, index):
    folder, env = scratch
    script = blocks("bash")[index]
    lines = [line for line in script.replace("\\\n", " ").splitlines() if line.strip()]
    if any(line.startswith("make ") for line in lines):
        # `make test` would run this test again: check what it runs, run `make demo` for real.
        dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "python -m pytest -q" in dry.stdout, dry.stdout + dry.stderr
        if not (ROOT / ".venv" / ".installed").exists():
            pytest.skip("`make demo` needs the install `make` makes (.venv/.installed); run `make test` first")
        done = subprocess.run(["make", "-s", "demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert list((Path(env["EMAKI_HOME"]) / "outputs").rglob("*.png"))
        return
    for line in lines:
        if line.startswith("emaki serve"):
            _serve(line, folder, env)
            continue
        done = subprocess.run(["bash", "-euc", line], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
    if "emaki train" in script:
        home = Path(env["EMAKI_HOME"])
        assert (home / "embeddings" / "nekomimi.pt").is_file() and (home / "hypernetworks" / "sepiastyle.pt").is_file()
        assert (home / "loras" / "sepialora.safetensors").is_file()
        made = sorted((home / "outputs").rglob("*.png"))
        assert "TI hashes: \"nekomimi: " in Image.open(made[0]).info["parameters"]
    if "emaki inpaint" in script:
        run = folder / "run1"
        assert len(list(run.glob("*.png"))) == 2 and (run / "summary.csv").is_file()
        assert (folder / "big" / "photo.png").is_file() and Image.open(folder / "big" / "photo.png").size == (128, 128)
        made = [Image.open(p).info["parameters"] for p in (Path(env["EMAKI_HOME"]) / "outputs").rglob("*.png")]
        assert any("Script: X/Y/Z plot" in text for text in made)
        assert any("Wildcard prompt: " in text and "anime style" in text for text in made)
    if "--from" in script:
        first, again = folder / "outputs" / "00000-1234.png", folder / "again" / "00000-1234.png"
        assert Image.open(first).tobytes() == Image.open(again).tobytes()

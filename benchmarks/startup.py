"""Where the start-up of `emaki generate` on the demo model goes, in CPU seconds.

    python benchmarks/startup.py [--repeats 3] [--before OLD_SRC]

Runs, in rounds (each kind once per round, so every kind sees the same mix of a shared
machine's load), fresh Python processes that stop at successive points of a generation's
imports, then the whole command (`emaki generate "1girl" --steps 1` on the demo model, in a new
`EMAKI_HOME`); prints each one's median user+system CPU seconds (a busy machine stretches wall
time, not these) and wall seconds. Each import step counts what the steps above it count too.
With --before, the whole command also runs from another source tree of emaki (e.g.
`git worktree add /tmp/old HEAD~1` → /tmp/old/src), alternately with this one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMPORT_STEPS = [
    ("python itself", "pass"),
    ("+ torch", "import torch"),
    ("+ torch._dynamo (diffusers imports it)", "import torch._dynamo"),
    ("+ diffusers' UNet and VAE classes", "from diffusers.models import AutoencoderKL, UNet2DConditionModel"),
    ("+ transformers' CLIP text model and tokenizer", (
     "from diffusers.models import AutoencoderKL, UNet2DConditionModel; "
     "from transformers import CLIPTextModel, CLIPTokenizer")),
    ("+ every module of emaki a generation imports", "import emaki.cli.generate, emaki.engine.engine, emaki.engine.policy"),
]


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one process run to its end."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own rusage, not the sum of all children
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"{command} failed:\n{errors.read().decode(errors='replace')[-3000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def generate_once(src: str | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, EMAKI_HOME=home, **({"PYTHONPATH": src} if src else {}))
        return timed([sys.executable, "-m", "emaki", "generate", "1girl", "--steps", "1"], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", metavar="SRC", help="also run the whole command from the emaki source tree SRC")
    args = parser.parse_args()
    kinds: list[tuple[str, list[str] | None, str | None]] = [
        (name, [sys.executable, "-c", code], None) for name, code in IMPORT_STEPS]
    kinds.append(("`emaki --help`", [sys.executable, "-m", "emaki", "--help"], None))
    kinds.append(("`emaki generate \"1girl\" --steps 1` (demo model)", None, None))
    if args.before:
        kinds.append(("the same, before (--before)", None, args.before))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in kinds}
    for _ in range(args.repeats):
        for name, command, src in kinds:
            runs[name].append(timed(command) if command else generate_once(src))
    print(f"medians of {args.repeats} run(s), whole processes")
    print(f"{'':<58} {'cpu s':>6} {'wall s':>7}")
    for name, _, _ in kinds:
        cpu, wall = (statistics.median(r[i] for r in runs[name]) for i in (0, 1))
        print(f"{name:<58} {cpu:6.2f} {wall:7.2f}")
    if args.before:
        pairs = zip(runs[kinds[-2][0]], runs[kinds[-1][0]], strict=True)
        print("generate after/before, cpu, round by round:", " ".join(f"{a[0] / b[0]:.3f}" for a, b in pairs))


if __name__ == "__main__":
    main()

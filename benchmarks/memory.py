"""Memory of emaki's big steps on the real SD 1.5 architecture (random weights, built locally).

Each measurement runs in its own subprocess, so its peak RSS (VmHWM) is its own:

    python benchmarks/memory.py vae --size 1024 --precision bf16
        one VAE decode of a size×size picture, whole and in tiles (--vae-tiling): peak RSS above
        the process with the VAE built, seconds, and how far the tiled picture is from the whole one
    python benchmarks/memory.py load [--repeats 3] [--before OLD_SRC] [--threads 1]
        reading an SD 1.5 fp16 .safetensors (2.1 GB) into memory, warm (read twice, the second
        timed), against loading it as a model at bf16 and fp32: seconds (wall and CPU, medians
        of the repeats) and peak RSS; with --before, the same loads with another source tree of
        emaki (e.g. `git worktree add /tmp/old HEAD~1` → /tmp/old/src) run alternately with
        this one, so both are measured under the same load of a shared machine
    python benchmarks/memory.py generate --size 1024 --steps 1
        a whole generation (bf16) with --vae-tiling off and on: peak RSS

`load` and `generate` build the checkpoint in a temporary folder and delete it afterwards, unless
--checkpoint names one to use (kept).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def status_mb(field: str) -> float:
    """A `/proc/self/status` field (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used (a busy machine stretches wall time, not these)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_vae(size: int, precision: str, tiled: bool, out: Path) -> dict:
    import torch
    from diffusers.models import AutoencoderKL

    from emaki.devices import DevicePolicy
    from emaki.engine.vae import decode_latents
    from emaki.models.configs import sd15_config

    torch.manual_seed(0)
    policy = DevicePolicy.choose(precision, "cpu", threads=1, vae_tiling="on" if tiled else "off")
    vae = AutoencoderKL(**sd15_config().vae).eval().requires_grad_(False).to(policy.dtype)
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(1))
    base = status_mb("VmRSS")
    start = time.perf_counter()
    pixels = decode_latents(vae, latents, policy)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    torch.save(pixels, out)
    return {"base_mb": base, "peak_mb": peak, "decode_mb": peak - base, "seconds": seconds}


def worker_read(checkpoint: Path) -> dict:
    """The file read into memory (one buffer of its size), twice; the second read is the one
    compared with (`seconds`), the first, into memory not yet touched, is given too (`fresh_*`:
    the kernel faulting in and zeroing those pages costs about as much again as the copy)."""
    size = checkpoint.stat().st_size
    buffer = mmap.mmap(-1, size)  # untouched pages, as a loader's new tensors are
    times = []
    for _ in range(2):
        start, cpu = time.perf_counter(), cpu_seconds()
        with open(checkpoint, "rb", buffering=0) as f:
            view, done = memoryview(buffer), 0
            while done < size:
                done += f.readinto(view[done:done + (64 << 20)])
            view.release()
        times.append((time.perf_counter() - start, cpu_seconds() - cpu))
    (fresh_seconds, fresh_cpu), (seconds, cpu) = times
    return {"seconds": seconds, "cpu_seconds": cpu, "fresh_seconds": fresh_seconds, "fresh_cpu_seconds": fresh_cpu,
            "peak_mb": status_mb("VmHWM"), "file_mb": size / 2**20}


def worker_load(checkpoint: Path, precision: str, threads: int) -> dict:
    import torch

    from emaki.models.hashes import HashCache
    from emaki.models.loader import load_model_uncached

    torch.set_num_threads(threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    hashes = HashCache(None)
    hashes.get(checkpoint)  # the file's hash, computed once per file (the engine's cache keeps it)
    base = status_mb("VmRSS")
    start, cpu = time.perf_counter(), cpu_seconds()
    model = load_model_uncached(checkpoint, dtype=dtype, hashes=hashes)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    parts = model.components
    fp32_mb = sum(p.numel() * 4 for m in (parts.unet, parts.vae, parts.text_encoder) for p in m.parameters()) / 2**20
    return {"seconds": seconds, "cpu_seconds": cpu, "base_mb": base, "peak_mb": status_mb("VmHWM"),
            "model_fp32_mb": fp32_mb}


def worker_generate(checkpoint: Path, size: int, steps: int, vae_tiling: str) -> dict:
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    params = GenerationParams.create(prompt="a lighthouse on a cliff", model=str(checkpoint), steps=steps, seed=1,
                                     width=size, height=size)
    engine = Engine(Workspace(Path(tempfile.mkdtemp())), DevicePolicy.choose("bf16", "cpu", threads=2,
                                                                              vae_tiling=vae_tiling))
    start = time.perf_counter()
    engine.generate(params, save=False)
    return {"seconds": time.perf_counter() - start, "peak_mb": status_mb("VmHWM")}


def run_worker(*args: str, src: str | None = None) -> dict:
    """One measurement in a fresh process; `src`: import emaki from that source tree instead."""
    env = dict(os.environ, PYTHONPATH=src) if src else None
    out = subprocess.run([sys.executable, __file__, "worker", *args], check=False, capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise SystemExit(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_vae(size: int, precision: str) -> None:
    import torch

    with tempfile.TemporaryDirectory() as folder:
        whole_out, tiled_out = Path(folder) / "whole.pt", Path(folder) / "tiled.pt"
        whole = run_worker("vae", str(size), precision, "whole", str(whole_out))
        tiled = run_worker("vae", str(size), precision, "tiled", str(tiled_out))
        a, b = torch.load(whole_out), torch.load(tiled_out)
    difference = ((a - b).abs() / 2)  # in [0, 1] pixel units (the VAE's [-1, 1] halved)
    print(f"VAE decode {size}² {precision}, SD 1.5 VAE (random weights), 1 thread")
    for name, r in (("whole", whole), ("tiled", tiled)):
        print(f"  {name:>5}: peak RSS {r['peak_mb']:7.0f} MB, {r['decode_mb']:6.0f} MB above the VAE; {r['seconds']:6.1f} s")
    print(f"  tiled/whole: memory above the VAE {tiled['decode_mb'] / whole['decode_mb']:.2f}x, "
          f"time {tiled['seconds'] / whole['seconds']:.2f}x")
    print(f"  tiled vs whole pixels (0-1 scale): mean {difference.mean():.4f}, max {difference.max():.4f}, "
          f"PSNR {float(-10 * torch.log10((difference ** 2).mean())):.1f} dB (random latents)")


def with_checkpoint(given: str | None, use: Callable[[Path], None]) -> None:
    if given:
        use(Path(given))
        return
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        path = Path(folder) / "sd15-random.safetensors"
        import torch

        from emaki.models.checkpoint import save_single_file
        from emaki.models.components import build_random_components
        from emaki.models.configs import sd15_config

        print(f"building a random SD 1.5 fp16 checkpoint at {path} (deleted afterwards) ...", flush=True)
        save_single_file(build_random_components(sd15_config(), seed=0), path, dtype=torch.float16)
        use(path)


def _medians(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def compare_load(checkpoint: Path, repeats: int, before: str | None, threads: int) -> None:
    """Every round runs the read, then each load (this tree, then `before`'s), so each kind of
    run sees the same mix of a shared machine's load; medians over the rounds."""
    trees = {"": None} if before is None else {"": None, " (before)": before}
    kinds = [("read", "", None)] + [(precision, label, src) for precision in ("bf16", "fp32")
                                    for label, src in trees.items()]
    runs: dict[tuple[str, str], list[dict]] = {(kind, label): [] for kind, label, _ in kinds}
    for _ in range(repeats):
        for kind, label, src in kinds:
            args = ("read", str(checkpoint)) if kind == "read" else ("load", str(checkpoint), kind, str(threads))
            runs[kind, label].append(run_worker(*args, src=src))
    read = _medians(runs["read", ""])
    print(f"{checkpoint.name}: {read['file_mb']:.0f} MB; medians of {repeats} run(s); loads on {threads} thread(s)")
    print(f"  read (warm): {read['seconds']:6.2f} s, cpu {read['cpu_seconds']:5.2f} s, peak RSS {read['peak_mb']:7.0f} MB; "
          f"into untouched memory: {read['fresh_seconds']:6.2f} s, cpu {read['fresh_cpu_seconds']:5.2f} s")
    for kind, label, _ in kinds[1:]:
        r = _medians(runs[kind, label])
        print(f"  load {kind}{label}: {r['seconds']:6.2f} s ({r['seconds'] / read['seconds']:.2f}x the read), cpu "
              f"{r['cpu_seconds']:5.2f} s ({r['cpu_seconds'] / read['cpu_seconds']:.2f}x the read's, "
              f"{r['cpu_seconds'] / read['fresh_cpu_seconds']:.2f}x into untouched memory), peak RSS "
              f"{r['peak_mb']:7.0f} MB ({r['peak_mb'] / r['model_fp32_mb']:.2f}x the model's fp32 size, "
              f"{r['model_fp32_mb']:.0f} MB; {r['base_mb']:.0f} MB before loading)")


def compare_generate(checkpoint: Path, size: int, steps: int) -> None:
    for mode in ("off", "on"):
        r = run_worker("generate", str(checkpoint), str(size), str(steps), mode)
        print(f"  generate {size}² bf16, {steps} steps, --vae-tiling {mode}: peak RSS {r['peak_mb']:7.0f} MB, "
              f"{r['seconds']:.1f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        kind, *rest = sys.argv[2:]
        if kind == "vae":
            result = worker_vae(int(rest[0]), rest[1], rest[2] == "tiled", Path(rest[3]))
        elif kind == "read":
            result = worker_read(Path(rest[0]))
        elif kind == "load":
            result = worker_load(Path(rest[0]), rest[1], int(rest[2]))
        else:
            result = worker_generate(Path(rest[0]), int(rest[1]), int(rest[2]), rest[3])
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["vae", "load", "generate"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--checkpoint", help="an SD 1.5 .safetensors to use (default: one built and deleted)")
    parser.add_argument("--repeats", type=int, default=1, help="load: rounds of runs (medians are printed)")
    parser.add_argument("--before", metavar="SRC", help="load: also load with the emaki source tree SRC, alternately")
    parser.add_argument("--threads", type=int, default=1, help="load: torch threads (default 1)")
    args = parser.parse_args()
    if args.what == "vae":
        compare_vae(args.size, args.precision)
    elif args.what == "load":
        with_checkpoint(args.checkpoint, lambda path: compare_load(path, args.repeats, args.before, args.threads))
    else:
        with_checkpoint(args.checkpoint, lambda path: compare_generate(path, args.size, args.steps))


if __name__ == "__main__":
    main()

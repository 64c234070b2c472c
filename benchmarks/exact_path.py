"""The exact path's changes, each against the previous default, in one run (issue 19, item 2).

SD 1.5 architecture with random weights (built once, as benchmarks/generate.py does), CFG batch 2.
Variants: eager (the default: channels-last, oneDNN reorders each conv weight on every call),
prepack (`emaki.engine.prepack`: weights packed once; not the default, docs/performance.md),
compile (`--compile`).

    python benchmarks/exact_path.py reorders --size 64           # oneDNN weight reorders per UNet call
    python benchmarks/exact_path.py step --size 256 --repeats 3  # s per UNet step: eager vs prepack (vs --compile)
    python benchmarks/exact_path.py end-to-end --size 256 --steps 6 # the engine: eager vs prepack (vs --compile)

`reorders` counts oneDNN's reorder primitives (ONEDNN_VERBOSE) in the second UNet call, in bf16
channels-last as the engine runs it (the first call also creates the primitives). `step` alternates
the variants call by call in one process (eager first, compiled after its compile) and prints each
one's median and the ratio to eager. `end-to-end` runs `Engine.generate` (DPM++ 2M Karras, CFG 7) in a
fresh process per variant (with `--compile`, compile's time includes its compile, or reuses the
on-disk cache of an earlier run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKPOINT = Path("/tmp/emaki-bench-sd15.safetensors")
PROMPT = "masterpiece, best quality, 1girl, silver hair, smile"


def ensure_checkpoint(path: Path) -> None:
    if not path.exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("generate.py")), "--checkpoint", str(path),
                        "--sizes", "64", "--steps", "2", "--precisions", "bf16", "--features", "exact"], check=True)


def prepared_unet(checkpoint: Path, precision: str):
    """The UNet as the engine prepares it: the policy's dtype, channels-last on a CPU."""
    import torch

    from emaki.devices import DevicePolicy
    from emaki.models.loader import load_model_uncached

    policy = DevicePolicy.choose(precision, "cpu", threads=torch.get_num_threads())
    unet = load_model_uncached(checkpoint, dtype=policy.dtype).components.unet.to(policy.dtype)
    return unet.to(memory_format=torch.channels_last), policy.dtype


def unet_inputs(unet, dtype, size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    context = torch.randn(2, 77, 768, generator=g).to(dtype)
    return x, torch.tensor([500.0, 500.0]), context


def count_reorders(args: argparse.Namespace) -> None:
    """Child process: two UNet calls under ONEDNN_VERBOSE; prints the marker between them."""
    import torch

    unet, dtype = prepared_unet(args.checkpoint, args.precision)
    x, t, context = unet_inputs(unet, dtype, args.size)
    with torch.inference_mode():
        unet(x, t, encoder_hidden_states=context)
        print("=== second call ===", flush=True)
        unet(x, t, encoder_hidden_states=context)
        print("=== end ===", flush=True)


def reorders(args: argparse.Namespace) -> None:
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    done = subprocess.run([sys.executable, __file__, "_reorders", "--size", str(args.size), "--precision",
                           args.precision, "--checkpoint", str(args.checkpoint)], env=env, capture_output=True,
                          text=True, check=True)
    second = done.stdout.split("=== second call ===")[1].split("=== end ===")[0]
    execs = [line.split(",") for line in second.splitlines() if line.startswith("onednn_verbose") and ",exec," in line]
    kinds: dict[str, int] = {}
    for fields in execs:
        kind = fields[fields.index("exec") + 2]  # onednn_verbose,[time,]primitive,exec,cpu,KIND,...
        kinds[kind] = kinds.get(kind, 0) + 1
    print(json.dumps({"size": args.size, "precision": args.precision, "primitives_in_second_call": kinds}))
    for fields in [f for f in execs if "reorder" in f][:args.show]:
        print(",".join(fields))


def step(args: argparse.Namespace) -> None:
    import torch

    from emaki.engine.prepack import set_prepacked
    from emaki.engine.speed.compile import set_compiled

    unet, dtype = prepared_unet(args.checkpoint, args.precision)
    x, t, context = unet_inputs(unet, dtype, args.size)
    variants = ["eager", "prepack", "compile"] if args.compile else ["eager", "prepack"]

    def use(variant: str) -> None:
        set_prepacked(unet, variant == "prepack")
        set_compiled(unet, variant == "compile")
    times: dict[str, list[float]] = {v: [] for v in variants}
    with torch.inference_mode():
        for variant in variants:  # warm: primitives made, weights packed, compiled
            use(variant)
            start = time.perf_counter()
            unet(x, t, encoder_hidden_states=context)
            print(f"{variant}: first call {time.perf_counter() - start:.1f} s", flush=True)
        for _ in range(args.repeats):
            for variant in variants:
                use(variant)
                start = time.perf_counter()
                unet(x, t, encoder_hidden_states=context)
                times[variant].append(time.perf_counter() - start)
    eager = statistics.median(times["eager"])
    for variant, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{variant:>8} {median:7.2f} s/step (median of {len(seconds)}; min {min(seconds):.2f}, "
              f"max {max(seconds):.2f})  x{eager / median:.2f} vs eager", flush=True)


def generate_once(args: argparse.Namespace) -> None:
    """Child process: one `Engine.generate`; prints its figures as JSON."""
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.engine.prepack import set_prepacked
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    stamps: list[float] = []
    params = GenerationParams.create(prompt=PROMPT, model=str(args.checkpoint), sampler_name="DPM++ 2M Karras",
                                     steps=args.steps, cfg_scale=7, seed=1, width=args.size, height=args.size)
    start = time.perf_counter()
    policy = DevicePolicy.choose(args.precision, "cpu", threads=args.threads, compile=args.variant == "compile")
    engine = Engine(Workspace(Path(tempfile.mkdtemp())), policy)
    if args.variant == "prepack":  # the model load counts in every variant's total
        set_prepacked(engine.load(str(args.checkpoint)).components.unet, True)
    engine.generate(params, save=False, progress=lambda e: stamps.append(time.perf_counter()))
    end = time.perf_counter()
    print(json.dumps({"per_step": (stamps[-1] - stamps[1]) / (len(stamps) - 2), "total": end - start}))


def end_to_end(args: argparse.Namespace) -> None:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(args.cache))
    rows = {}
    variants = ["eager", "prepack", "compile"] if args.compile else ["eager", "prepack"]
    for variant in variants:
        done = subprocess.run([sys.executable, __file__, "_generate", "--variant", variant, "--size", str(args.size),
                               "--steps", str(args.steps), "--precision", args.precision, "--threads",
                               str(args.threads), "--checkpoint", str(args.checkpoint)],
                              env=env, capture_output=True, text=True, check=True)
        rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:>8} {rows[variant]['per_step']:7.2f} s/step (steps 3 on) "
              f"{rows[variant]['total']:8.1f} s total", flush=True)
    e = rows["eager"]
    for variant in variants[1:]:
        c = rows[variant]
        print(f"{variant} vs eager: x{e['per_step'] / c['per_step']:.2f} per step, "
              f"x{e['total'] / c['total']:.2f} end to end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["reorders", "step", "end-to-end", "_reorders", "_generate"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="step: time torch.compile too (minutes to compile)")
    parser.add_argument("--show", type=int, default=0, help="reorders: print this many of the reorder lines")
    parser.add_argument("--variant", default="eager")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "emaki-bench-inductor")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ensure_checkpoint(args.checkpoint)
    {"reorders": reorders, "step": step, "end-to-end": end_to_end, "_reorders": count_reorders,
     "_generate": generate_once}[args.what](args)


if __name__ == "__main__":
    main()

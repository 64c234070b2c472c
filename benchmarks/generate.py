"""emaki vs stock diffusers on the real SD 1.5 architecture (random weights, built locally).

Each variant runs in its own subprocess so its peak memory (max RSS) is its own. Prints
seconds per denoising step (CFG batch of 2), VAE decode seconds, peak RSS and the ratio
emaki / diffusers at the same precision, for each size.

    python benchmarks/generate.py --sizes 256 512 --steps 4 --precisions fp32 bf16

`--features` times emaki's speed features (docs/performance.md) against its exact path instead,
each in its own subprocess, at the same size, steps and precision:

    python benchmarks/generate.py --sizes 256 --steps 4 --precisions bf16 --features exact ngms gate cache2 fast
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "masterpiece, best quality, 1girl, silver hair, smile"
NEGATIVE = "lowres, bad anatomy"
# GenerationParams fields of each --features name; `fast` is `--speed fast` (emaki.params.speed_preset).
FEATURES: dict[str, dict] = {
    "exact": {},
    "ngms": {"s_min_uncond": 4.0},
    "ngms-all": {"s_min_uncond": 4.0, "s_min_uncond_all": True},
    "cache2": {"cache_interval": 2},
    "cache3": {"cache_interval": 3},
    "gate": {"gate_step": "50%"},  # a share of the steps, as the preset sets it
    "tome": {"token_merging_ratio": 0.5},
    "fast": {},
}


def build_checkpoint(path: Path) -> None:
    import torch

    from emaki.models.checkpoint import save_single_file
    from emaki.models.components import build_random_components
    from emaki.models.configs import sd15_config

    torch.set_num_threads(2)
    save_single_file(build_random_components(sd15_config(), seed=0), path, dtype=torch.float16)


def feature_fields(name: str, steps: int) -> dict:
    from emaki.params import speed_preset

    if name == "fast":
        return speed_preset("fast", steps)
    return {k: max(1, round(steps * float(v[:-1]) / 100)) if isinstance(v, str) else v
            for k, v in FEATURES[name].items()}


def run_emaki(checkpoint: Path, size: int, steps: int, precision: str, feature: str = "exact") -> dict:
    import tempfile

    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    stamps: list[float] = []
    params = GenerationParams.create(prompt=PROMPT, negative_prompt=NEGATIVE, model=str(checkpoint),
                                     sampler_name="Euler a", steps=steps, cfg_scale=7, seed=1,
                                     width=size, height=size, **feature_fields(feature, steps))
    start = time.perf_counter()
    engine = Engine(Workspace(Path(tempfile.mkdtemp())), DevicePolicy.choose(precision, threads=2))
    engine.generate(params, save=False, progress=lambda e: stamps.append(time.perf_counter()))
    end = time.perf_counter()
    return {"stamps": stamps, "start": start, "end": end}


def run_diffusers(checkpoint: Path, size: int, steps: int, precision: str) -> dict:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from emaki.models.loader import load_model_uncached

    parts = load_model_uncached(checkpoint).components
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False).to(dtype=dtype)
    stamps: list[float] = []

    def on_step(pipe, i, t, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    with torch.inference_mode():
        pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7, height=size, width=size,
             generator=torch.Generator().manual_seed(1), callback_on_step_end=on_step)
    end = time.perf_counter()
    return {"stamps": stamps, "start": start, "end": end}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(2)
    if args.worker == "emaki":
        result = run_emaki(Path(args.checkpoint), args.size, args.steps, args.precision, args.feature)
    else:
        result = run_diffusers(Path(args.checkpoint), args.size, args.steps, args.precision)
    stamps = result["stamps"]
    # Steps after the first: model load and prompt encoding are not sampling.
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    print(json.dumps({"per_step": per_step, "decode": result["end"] - stamps[-1],
                      "total": result["end"] - result["start"],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--checkpoint", default="/tmp/emaki-bench-sd15.safetensors")
    parser.add_argument("--worker", choices=["emaki", "diffusers"])
    parser.add_argument("--size", type=int)
    parser.add_argument("--precision")
    parser.add_argument("--features", nargs="+", choices=list(FEATURES),
                        help="time these speed features against emaki's exact path (no diffusers run)")
    parser.add_argument("--feature", default="exact", choices=list(FEATURES))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        print(f"building a random SD 1.5 checkpoint at {checkpoint} ...", flush=True)
        build_checkpoint(checkpoint)
    if args.features:
        compare_features(args, checkpoint)
        return
    print(f"{'size':>5} {'prec':>5} {'tool':>9} {'s/step':>8} {'decode s':>9} {'peak GB':>8}")
    for size in args.sizes:
        for precision in args.precisions:
            rows = {}
            for tool in ("diffusers", "emaki"):
                out = subprocess.run([sys.executable, __file__, "--worker", tool, "--checkpoint", str(checkpoint),
                                      "--size", str(size), "--steps", str(args.steps), "--precision", precision],
                                     capture_output=True, text=True, check=True)
                rows[tool] = json.loads(out.stdout.strip().splitlines()[-1])
                r = rows[tool]
                print(f"{size:>5} {precision:>5} {tool:>9} {r['per_step']:8.2f} {r['decode']:9.2f} "
                      f"{r['peak_rss_gb']:8.2f}", flush=True)
            ratio = rows["emaki"]["per_step"] / rows["diffusers"]["per_step"]
            print(f"{size:>5} {precision:>5} {'ratio':>9} {ratio:8.3f}  (emaki / diffusers, s per step)", flush=True)


def compare_features(args: argparse.Namespace, checkpoint: Path) -> None:
    """Seconds of sampling (steps 2..N: the first step is never approximated, and carries the
    warm-up) and end to end, and the speed-up of each feature over `exact` in the same run."""
    print(f"{'size':>5} {'prec':>5} {'feature':>9} {'s/step':>8} {'total s':>8} {'x step':>7} {'x total':>8}")
    for size in args.sizes:
        for precision in args.precisions:
            base: dict | None = None
            for feature in ["exact", *(f for f in args.features if f != "exact")]:
                out = subprocess.run([sys.executable, __file__, "--worker", "emaki", "--checkpoint", str(checkpoint),
                                      "--size", str(size), "--steps", str(args.steps), "--precision", precision,
                                      "--feature", feature], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                base = base or r
                print(f"{size:>5} {precision:>5} {feature:>9} {r['per_step']:8.2f} {r['total']:8.2f} "
                      f"{base['per_step'] / r['per_step']:7.2f} {base['total'] / r['total']:8.2f}", flush=True)


if __name__ == "__main__":
    main()

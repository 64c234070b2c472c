"""emaki vs stock diffusers on the real SD 1.5 architecture (random weights, built locally).

Each variant runs in its own subprocess so its peak memory (max RSS) is its own. Prints
seconds per denoising step (CFG batch of 2), VAE decode seconds, end-to-end seconds, peak RSS
and the speed-up over stock diffusers (bf16 channels-last, same scheduler) at the same precision.
The issue's protocol (512², 20 steps DPM++ 2M Karras, CFG 7, bf16, the exact path and `--speed fast`):

    python benchmarks/generate.py --sizes 512 --steps 20 --precisions bf16 --vs-diffusers exact fast

`--features` times emaki's speed features (docs/performance.md) against its exact path instead,
each in its own subprocess, at the same size, steps and precision:

    python benchmarks/generate.py --sizes 256 --steps 4 --precisions bf16 --features exact ngms gate cache2 fast

`--device cuda` runs both tools on the GPU (fp16 is its precision; each step's time is taken after
the GPU has finished it), and adds the GPU's peak memory. `compile` is `--compile` (torch.compile
of the UNet: its first call compiles, so look at s/step), `compile-graphs` the same with CUDA graphs
(inductor's `reduce-overhead`; GPU only). benchmarks/gpu.sh runs the GPU checks in one go:

    python benchmarks/generate.py --device cuda --sizes 512 --steps 20 --precisions fp16 --vs-diffusers exact fast compile
"""

from __future__ import annotations

import argparse
import json
import os
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
    "compile": {},  # not a field: DevicePolicy(compile=True)
    "compile-graphs": {},  # the same, compiled with CUDA graphs
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def build_checkpoint(path: Path) -> None:
    import torch

    from emaki.models.checkpoint import save_single_file
    from emaki.models.components import build_random_components
    from emaki.models.configs import sd15_config

    torch.set_num_threads(min(8, os.cpu_count() or 1))  # a GPU machine has cores to spare
    save_single_file(build_random_components(sd15_config(), seed=0), path, dtype=torch.float16)


def feature_fields(name: str, steps: int) -> dict:
    """A feature's GenerationParams fields: a name of FEATURES, or `key=value,...` as
    benchmarks/speed_quality.py takes them (e.g. `s_min_uncond=8,s_min_uncond_all=true`)."""
    from speed_quality import variant_fields

    return variant_fields(name, steps, FEATURES)


def feature_spec(text: str) -> str:
    """An argparse type: a feature's name, or fields as `key=value,...`."""
    if text not in FEATURES and "=" not in text:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FEATURES)}, or key=value,... (got {text!r})")
    return text


def stamp(device: str) -> float:
    """Now, once the device has finished what was queued: a GPU runs behind the Python that
    queues its work, so a time taken without waiting would be the queueing's."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_emaki(checkpoint: Path, size: int, steps: int, precision: str, feature: str = "exact",
              sampler: str = "DPM++ 2M Karras", device: str = "cpu") -> dict:
    import tempfile

    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    stamps: list[float] = []
    params = GenerationParams.create(prompt=PROMPT, negative_prompt=NEGATIVE, model=str(checkpoint),
                                     sampler_name=sampler, steps=steps, cfg_scale=7, seed=1,
                                     width=size, height=size, **feature_fields(feature, steps))
    policy = DevicePolicy.choose(precision, device, threads=2, compile=feature.startswith("compile"))
    engine = Engine(Workspace(Path(tempfile.mkdtemp())), policy)
    unet = engine.load(str(checkpoint)).components.unet  # loading is outside the timing, as diffusers' pipeline is built before it
    if feature == "compile-graphs":  # compiled before the engine would (it leaves a compiled UNet as it is)
        unet.compile(mode="reduce-overhead")
    start = stamp(device)
    engine.generate(params, save=False, progress=lambda e: stamps.append(stamp(device)))
    end = stamp(device)
    return {"stamps": stamps, "start": start, "end": end}


def diffusers_scheduler(sampler: str):
    """Stock diffusers' scheduler for an A1111 sampler name (the two the protocol uses)."""
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if sampler == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler(**betas, use_karras_sigmas=True)
    if sampler == "Euler a":
        return EulerAncestralDiscreteScheduler(**betas)
    raise SystemExit(f"--sampler: no diffusers scheduler mapped for {sampler!r}")


def run_diffusers(checkpoint: Path, size: int, steps: int, precision: str, sampler: str = "DPM++ 2M Karras",
                  device: str = "cpu") -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    from emaki.models.loader import load_model_uncached

    parts = load_model_uncached(checkpoint).components
    dtype = getattr(torch, DTYPES[precision])
    scheduler = diffusers_scheduler(sampler)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False).to(device, dtype=dtype)
    pipe.unet.to(memory_format=torch.channels_last)  # the protocol's baseline: bf16 channels-last
    pipe.vae.to(memory_format=torch.channels_last)
    stamps: list[float] = []

    def on_step(pipe, i, t, kwargs):
        stamps.append(stamp(device))
        return kwargs

    start = stamp(device)
    with torch.inference_mode():
        pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7, height=size, width=size,
             generator=torch.Generator().manual_seed(1), callback_on_step_end=on_step)
    end = stamp(device)
    return {"stamps": stamps, "start": start, "end": end}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(2)
    if args.worker == "emaki":
        result = run_emaki(Path(args.checkpoint), args.size, args.steps, args.precision, args.feature, args.sampler,
                           args.device)
    else:
        result = run_diffusers(Path(args.checkpoint), args.size, args.steps, args.precision, args.sampler, args.device)
    stamps = result["stamps"]
    # Steps after the first: model load and prompt encoding are not sampling.
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    gpu_gb = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
    print(json.dumps({"per_step": per_step, "decode": result["end"] - stamps[-1],
                      "total": result["end"] - result["start"],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_gpu_gb": gpu_gb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--checkpoint", default="/tmp/emaki-bench-sd15.safetensors")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--worker", choices=["emaki", "diffusers"])
    parser.add_argument("--size", type=int)
    parser.add_argument("--precision")
    parser.add_argument("--features", nargs="+", type=feature_spec,
                        help="time these speed features against emaki's exact path (no diffusers run)")
    parser.add_argument("--feature", default="exact", type=feature_spec)
    parser.add_argument("--sampler", default="DPM++ 2M Karras", choices=["DPM++ 2M Karras", "Euler a"])
    parser.add_argument("--vs-diffusers", nargs="+", default=["exact"], type=feature_spec,
                        help="emaki variants timed against diffusers (e.g. exact fast)")
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
    print(f"{'size':>5} {'prec':>5} {'tool':>20} {'s/step':>8} {'decode s':>9} {'total s':>8} {'peak GB':>8}"
          f" {'GPU GB':>7} {'x step':>7} {'x total':>8}")
    for size in args.sizes:
        for precision in args.precisions:
            base: dict | None = None
            for tool, feature in [("diffusers", "exact"), *(("emaki", f) for f in args.vs_diffusers)]:
                r = run_worker(args, checkpoint, tool, feature, size, precision)
                if r is None:
                    continue
                base = base or r
                # x = diffusers' time / this one's: above 1 is faster than stock diffusers
                label = tool if tool == "diffusers" else f"emaki {feature}"
                print(f"{size:>5} {precision:>5} {label:>20} {r['per_step']:8.2f} {r['decode']:9.2f} {r['total']:8.2f} "
                      f"{r['peak_rss_gb']:8.2f} {r['peak_gpu_gb']:7.2f} {base['per_step'] / r['per_step']:7.2f} "
                      f"{base['total'] / r['total']:8.2f}", flush=True)


def run_worker(args: argparse.Namespace, checkpoint: Path, tool: str, feature: str, size: int,
               precision: str) -> dict | None:
    """One tool's run in a process of its own (its peak memory is its own); None, with the end
    of what it printed, when it failed (the other rows still run: a GPU check has one try)."""
    done = subprocess.run([sys.executable, __file__, "--worker", tool, "--checkpoint", str(checkpoint), "--size",
                           str(size), "--steps", str(args.steps), "--precision", precision, "--feature", feature,
                           "--sampler", args.sampler, "--device", args.device], check=False, capture_output=True, text=True)
    if done.returncode:
        print(f"{tool} {feature} at {size}, {precision}: failed\n" + "\n".join(done.stderr.splitlines()[-15:]),
              flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_features(args: argparse.Namespace, checkpoint: Path) -> None:
    """Seconds of sampling (steps 2..N: the first step is never approximated, and carries the
    warm-up) and end to end, and the speed-up of each feature over `exact` in the same run."""
    print(f"{'size':>5} {'prec':>5} {'feature':>14} {'s/step':>8} {'total s':>8} {'x step':>7} {'x total':>8}")
    for size in args.sizes:
        for precision in args.precisions:
            base: dict | None = None
            for feature in ["exact", *(f for f in args.features if f != "exact")]:
                r = run_worker(args, checkpoint, "emaki", feature, size, precision)
                if r is None:
                    continue
                base = base or r
                print(f"{size:>5} {precision:>5} {feature:>14} {r['per_step']:8.2f} {r['total']:8.2f} "
                      f"{base['per_step'] / r['per_step']:7.2f} {base['total'] / r['total']:8.2f}", flush=True)


if __name__ == "__main__":
    main()

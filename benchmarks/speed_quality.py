"""What each speed feature costs in quality, on the bundled demo model (docs/performance.md).

For `--n` random training-distribution captions (`emaki.demo.faces`), one image per caption and
seed with the exact path and with each variant; each image is scored by the demo evaluator
(`emaki.demo.describe`: attribute accuracy, as `emaki.demo.quality.prompt_accuracy` counts it)
and compared with the exact image (PSNR, and `same %`: the share of seeds whose every attribute the
evaluator reads as it reads the exact image's). A variant is `name` from VARIANTS or `key=value,...`
of GenerationParams fields; `precision=...` and `compile=true` in it set the variant's
`DevicePolicy` instead.

    .venv/bin/python benchmarks/speed_quality.py --n 100
    .venv/bin/python benchmarks/speed_quality.py --n 100 --sampler "DPM++ 2M" --variants fast gate_step=8

On a GPU (benchmarks/gpu.sh), the reference on the CPU in fp32 and the variants on the GPU: the
default path (`default`: auto precision, fp16 there) must be the same picture.

    python benchmarks/speed_quality.py --n 100 --device cuda --precision auto --reference-device cpu \
        --reference-precision fp32 --variants default precision=fp32 fast compile=true
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

VARIANTS: dict[str, dict[str, Any]] = {
    "ngms1": {"s_min_uncond": 1.0},  # A1111's way: every other step below sigma 1
    "ngms4-all": {"s_min_uncond": 4.0, "s_min_uncond_all": True},
    "ngms8-all": {"s_min_uncond": 8.0, "s_min_uncond_all": True},
    "cache2": {"cache_interval": 2},
    "cache3": {"cache_interval": 3},
    "gate30%": {"gate_step": "30%"},
    "gate50%": {"gate_step": "50%"},
    "tome30": {"token_merging_ratio": 0.3},  # ToMe: share of the full-resolution tokens merged
    "tome50": {"token_merging_ratio": 0.5},
    "fast": {},  # `--speed fast`
    "default": {},  # the exact path, on --device at --precision (against a reference elsewhere)
}


def variant_fields(spec: str, steps: int, named: dict[str, dict[str, Any]] = VARIANTS) -> dict[str, Any]:
    """The GenerationParams fields of a variant: `fast` (the preset), a name in `named`, or
    `key=value,...`; a value "N%" is that share of the steps."""
    from emaki.params import speed_preset

    if spec == "fast":
        return speed_preset("fast", steps)
    if spec in named:
        fields = named[spec]
    else:
        fields = {k: parse_value(v) for k, v in (item.split("=", 1) for item in spec.split(","))}
    return {k: max(1, round(steps * float(v[:-1]) / 100)) if isinstance(v, str) and v.endswith("%") else v
            for k, v in fields.items()}


def parse_value(text: str) -> Any:
    """A `key=value` variant's value: JSON (numbers, true), else the text itself (fp32)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * float(np.log10(255**2 / mse))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="random captions (one image each per variant)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the variants run (cpu, cuda)")
    parser.add_argument("--reference-device", help="where the exact reference runs (default: --device)")
    parser.add_argument("--reference-precision", help="the reference's precision (default: --precision)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from emaki.demo.describe import describe
    from emaki.demo.faces import caption, random_attributes
    from emaki.demo.quality import ATTRIBUTES
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    torch.set_num_threads(args.threads)
    workspace = Workspace(Path(tempfile.mkdtemp(prefix="emaki-speed-")))
    engines: dict[tuple[str, str, bool], Engine] = {}

    def engine_for(device: str, precision: str, compiled: bool) -> Engine:
        key = (device, precision, compiled)
        if key not in engines:
            engines[key] = Engine(workspace, DevicePolicy.choose(precision, device, threads=args.threads,
                                                                 compile=compiled))
        return engines[key]

    reference = (args.reference_device or args.device, args.reference_precision or args.precision, False)
    variants = {"exact": {}, **{v: variant_fields(v, args.steps) for v in args.variants}}
    policies = {name: (args.device, str(fields.pop("precision", args.precision)), bool(fields.pop("compile", False)))
                for name, fields in variants.items()} | {"exact": reference}
    scores = {name: {"correct": 0, "counted": 0, "psnr": [], "seconds": 0.0, "same": 0} for name in variants}
    rng = random.Random(0)
    for i in range(args.n):
        attrs = random_attributes(rng)
        prompt, want = caption(attrs, rng), attrs.to_dict()
        exact: np.ndarray | None = None
        exact_read: dict[str, Any] | None = None
        for name, fields in variants.items():
            params = GenerationParams.create(prompt=prompt, seed=1000 + i, steps=args.steps, sampler_name=args.sampler,
                                             cfg_scale=args.cfg, **fields)
            start = time.perf_counter()
            image = engine_for(*policies[name]).generate(params, save=False).images[0].image
            score = scores[name]
            score["seconds"] += time.perf_counter() - start
            pixels = np.asarray(image)
            exact = pixels if exact is None else exact
            score["psnr"].append(psnr(pixels, exact))
            got = describe(image)
            read = {a: got[a] for a in ATTRIBUTES if not (a == "eye_color" and attrs.expression == "closed eyes")}
            exact_read = read if exact_read is None else exact_read
            score["same"] += read == exact_read  # the evaluator reads the reference's picture from this one
            for attribute in ATTRIBUTES:
                if attribute == "eye_color" and attrs.expression == "closed eyes":
                    continue  # closed eyes hide the colour
                score["counted"] += 1
                score["correct"] += got[attribute] == want[attribute]
    report = {"n": args.n, "steps": args.steps, "sampler": args.sampler, "cfg": args.cfg, "variants": {},
              "policies": {name: list(policy) for name, policy in policies.items()}}
    print(f"{'variant':>12} {'fields':>60} {'accuracy':>9} {'Δ points':>9} {'PSNR mean':>10} {'PSNR min':>9} "
          f"{'same %':>7} {'s':>6}")
    base = 100 * scores["exact"]["correct"] / scores["exact"]["counted"]
    for name, fields in variants.items():
        s = scores[name]
        accuracy = 100 * s["correct"] / s["counted"]
        psnrs = np.array(s["psnr"])
        row = {"fields": fields, "accuracy": round(accuracy, 2), "delta_points": round(accuracy - base, 2),
               "psnr_mean": round(float(psnrs.mean()), 2), "psnr_min": round(float(psnrs.min()), 2),
               "same_attributes": round(100 * s["same"] / args.n, 1), "seconds": round(s["seconds"], 1)}
        report["variants"][name] = row
        print(f"{name:>12} {json.dumps(fields):>60} {accuracy:9.2f} {accuracy - base:+9.2f} {psnrs.mean():10.1f} "
              f"{psnrs.min():9.1f} {100 * s['same'] / args.n:7.1f} {s['seconds']:6.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

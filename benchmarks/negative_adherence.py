"""Whether a speed feature keeps the negative prompt working, on the bundled demo model.

NGMS and T-GATE leave the negative prompt's pass out of some steps, and benchmarks/speed_quality.py
(random captions, no negative prompt) cannot see what that costs. Here every image is `PROMPT`
with the negative prompt `--negative` (default "red hair"), one per seed, and the evaluator
(`emaki.demo.describe`) counts the images that show what the negative prompt names; the same
seeds without a negative prompt give the base rate. Variants as in speed_quality.py (`fast`, or
`key=value,...` of GenerationParams fields).

    .venv/bin/python benchmarks/negative_adherence.py --n 48 --variants fast "s_min_uncond=8,s_min_uncond_all=true"
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from speed_quality import variant_fields

PROMPT = "1girl, solo, portrait"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48, help="seeds (one image each, per variant)")
    parser.add_argument("--negative", default="red hair", help="a hair colour of the demo model, as `<colour> hair`")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="DPM++ 2M Karras")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["fast"])
    args = parser.parse_args(argv)

    from emaki.demo.describe import describe
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.params import GenerationParams
    from emaki.workspace import Workspace

    colour = args.negative.removesuffix(" hair")
    torch.set_num_threads(args.threads)
    engine = Engine(Workspace(Path(tempfile.mkdtemp(prefix="emaki-negative-"))),
                    DevicePolicy.choose(args.precision, "cpu", threads=args.threads))
    runs = {"no negative prompt": ("", {}), "exact": (args.negative, {}),
            **{name: (args.negative, variant_fields(name, args.steps)) for name in args.variants}}
    print(f"{'run':>40} {'images with ' + args.negative:>24}", flush=True)
    for name, (negative, fields) in runs.items():
        shown = 0
        for seed in range(args.n):
            params = GenerationParams.create(prompt=PROMPT, negative_prompt=negative, seed=2000 + seed,
                                             steps=args.steps, sampler_name=args.sampler, **fields)
            shown += describe(engine.generate(params, save=False).images[0].image)["hair_color"] == colour
        print(f"{name:>40} {shown:>14} of {args.n} ({100 * shown / args.n:.0f} %)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What token merging (`--token-merging R`) saves on the real SD 1.5 UNet (random weights).

One UNet call of a CFG batch (2 rows) per size, with and without `TokenMerging` patched in, in
the same process, alternating, the best of `--repeats` each: the ratio of the two is the
speed-up of a sampling step (the text encoder and the VAE are untouched by ToMe).

    .venv/bin/python benchmarks/token_merging_speed.py --sizes 512 1024 --ratios 0.5 --precision bf16
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from typing import Any

import torch


def timed_call(unet: torch.nn.Module, latent: torch.Tensor, context: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        unet(latent, torch.tensor([500.0] * latent.shape[0]), encoder_hidden_states=context)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from diffusers import UNet2DConditionModel

    from emaki.engine.patching import ModelHandle
    from emaki.engine.speed.token_merging import TokenMerging
    from emaki.models.configs import sd15_config

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd15_config().unet).to(dtype).eval()
    unet.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    context = torch.randn(2, 77, 768, dtype=dtype)
    model: Any = SimpleNamespace(components=SimpleNamespace(unet=unet))
    run: Any = SimpleNamespace(params=SimpleNamespace(seed=1))
    print(f"{'size':>5} {'ratio':>5} {'exact s':>8} {'ToMe s':>8} {'speed-up':>8}  ({args.precision}, "
          f"{args.threads} threads, UNet call of 2 rows)", flush=True)
    for size in args.sizes:
        latent = torch.randn(2, 4, size // 8, size // 8, dtype=dtype).contiguous(memory_format=torch.channels_last)
        timed_call(unet, latent, context)  # warm-up: oneDNN picks its kernels for this size
        for ratio in args.ratios:
            exact, merged = [], []
            for _ in range(args.repeats):
                exact.append(timed_call(unet, latent, context))
                with ModelHandle(model) as handle:
                    merging = TokenMerging(ratio)
                    merging.plan(run)
                    merging.patch_model(run, handle)
                    merged.append(timed_call(unet, latent, context))
            print(f"{size:>5} {ratio:>5} {min(exact):8.2f} {min(merged):8.2f} {min(exact) / min(merged):8.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

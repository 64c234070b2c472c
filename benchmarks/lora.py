"""What LoRAs cost on the SD 1.5 architecture (random weights): the one-time patch of three rank-32
LoRAs (every attention and feed-forward layer of the UNet and the text encoder, kohya names), the
same set again (its weights kept from the last run) and the seconds per denoising step with and
without them (patched weights: the same per step).

    python benchmarks/lora.py --size 256 --steps 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

CHECKPOINT = Path("/tmp/emaki-bench-sd15.safetensors")


def write_loras(folder: Path, rank: int) -> list[str]:
    import torch
    from safetensors.torch import save_file

    from emaki.models.loader import load_model_uncached
    from emaki.training.lora import TEXT_BLOCKS, UNET_BLOCKS, kohya_name, lora_targets

    parts = load_model_uncached(CHECKPOINT).components
    names = []
    for index in range(3):
        generator = torch.Generator().manual_seed(index)
        tensors = {}
        for component, root, blocks in (("unet", parts.unet, UNET_BLOCKS), ("te", parts.text_encoder, TEXT_BLOCKS)):
            for path, module in lora_targets(root, blocks):
                weight = module.weight
                name = kohya_name(component, path)
                tensors[f"{name}.lora_down.weight"] = torch.randn(rank, *weight.shape[1:], generator=generator) * 0.01
                up_shape = (weight.shape[0], rank, *([1, 1] if weight.ndim == 4 else []))
                tensors[f"{name}.lora_up.weight"] = torch.randn(*up_shape, generator=generator) * 0.01
                tensors[f"{name}.alpha"] = torch.tensor(float(rank))
        save_file(tensors, str(folder / f"bench{index}.safetensors"))
        names.append(f"bench{index}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 while another job runs)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    if not CHECKPOINT.exists():
        raise SystemExit(f"{CHECKPOINT}: run benchmarks/generate.py once to build it")
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.engine.networks import NETWORK_KINDS
    from emaki.engine.patching import ModelHandle
    from emaki.params import GenerationParams
    from emaki.prompts.networks import extract_networks
    from emaki.workspace import Workspace

    home = Path(tempfile.mkdtemp())
    (home / "loras").mkdir()
    names = write_loras(home / "loras", args.rank)
    engine = Engine(Workspace(home), DevicePolicy.choose(args.precision, threads=args.threads))
    model = engine.load(str(CHECKPOINT))
    tags = "".join(f" <lora:{name}:0.7>" for name in names)
    kind = next(k for k in NETWORK_KINDS if k.name == "lora")
    params = GenerationParams.create(prompt="1girl" + tags, model=str(CHECKPOINT), steps=args.steps,
                                     width=args.size, height=args.size, seed=1)
    run = SimpleNamespace(params=params, embeddings={})  # what `activate` reads of a run
    library = engine.networks.library(kind)
    for attempt in ("first (reads the files)", "a new set (files cached, every ΔW computed)",
                    "the same set again (the kept weights swapped in)"):
        if attempt.startswith("a new set"):
            library.kept.clear()  # as if another set had run in between
        with ModelHandle(model) as handle:
            start = time.perf_counter()
            kind.activate(library, engine.networks.folders(kind),
                          extract_networks(params.prompt)[1], run, handle)  # type: ignore[arg-type]
            print(f"patching 3 rank-{args.rank} LoRAs, {attempt}: {time.perf_counter() - start:.2f} s", flush=True)
    for prompt in ("1girl", "1girl" + tags):
        stamps: list[float] = []
        engine.generate(params.updated(prompt=prompt), save=False,
                        progress=lambda e, stamps=stamps: stamps.append(time.perf_counter()))
        per_step = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
        print(f"{'with' if tags in prompt else 'without'} LoRAs: {per_step:.3f} s/step at {args.size}²", flush=True)


if __name__ == "__main__":
    main()

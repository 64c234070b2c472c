"""Training benchmarks (issue: training embeddings and hypernetworks).

quality — on the demo model, with every option at its default but --steps: an embedding trained on
12 faces with cat ears (captions without them), a hypernetwork and a LoRA trained on 12 sepia faces;
each then draws --images images per prompt and `emaki.demo.describe` counts cat ears / sepia:

    python benchmarks/train.py quality --steps 400 --images 40 --seeds 0,1,2,3,4 --kinds hypernetwork,lora

`--kinds known` trains an embedding on 12 faces with green hair, captioned without it: a concept
the demo model can draw, judged with the name after `1girl`, first, and after `1girl, solo`
(`--precision`: the engine's precision, auto, fp32 or bf16).

`--seeds` are training seeds (`TrainingParams.seed`: the network's initial weights, the data order,
the noise and timesteps); the 12 faces and the images judged (seeds 1000...) stay the same. The
prompt without the network draws the same images for every run, so it is judged once.
`--model PATH` trains on and draws with that checkpoint instead of the demo model (e.g. a retrained
demo model).

speed — the SD 1.5 architecture with random weights at 512², batch 1: seconds per embedding
training step of emaki against a plain diffusers textual-inversion loop (the diffusers example's
recipe: the whole token-embedding matrix trainable, DDPM noise, MSE), each in its own process, and
each process's peak memory (max RSS):

    python benchmarks/train.py speed --size 512 --steps 7
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CAPTION = "1girl, solo, long hair, smile"
# (kind, name, concept of the 12 faces, prompt with the network, what `describe` should find)
CASES = [("embedding", "nekomimi", "cat_ears", "1girl, nekomimi", "cat_ears"),
         ("hypernetwork", "sepiastyle", "sepia", "1girl <hypernet:sepiastyle:1>", "sepia"),
         ("lora", "sepialora", "sepia", "1girl <lora:sepialora:1>", "sepia"),
         ("known", "mystery", "green_hair", "1girl, mystery", "green_hair")]
# what `describe` says when it finds each feature
FOUND: dict[str, Callable[[dict[str, Any]], bool]] = {
    "cat_ears": lambda found: bool(found["cat_ears"]),
    "sepia": lambda found: found["style"] == "sepia",
    "green_hair": lambda found: found["hair_color"] == "green",
}
# where else the `known` case's name is judged in the prompt
OTHER_PLACES = {"known": ("mystery, 1girl", "1girl, solo, mystery")}


def quality(args: argparse.Namespace) -> None:
    from emaki.demo.datasets import write_concept_dataset, write_hair_color_dataset
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="emaki-train-bench-"))
    engine = Engine(Workspace(root / "home"), DevicePolicy.choose(args.precision, threads=args.threads))
    cases = [case for case in CASES if case[0] in args.kinds.split(",")]
    judged: dict[tuple[str, str], float] = {}  # (prompt, feature) → rate; without a network, judged once
    print(f"{'kind':>12} {'seed':>4} {'train s':>8} {'prompt':>32} {'rate':>6}  file")
    for kind, name, concept, prompt, feature in cases:
        data = root / concept
        if concept == "green_hair":
            write_hair_color_dataset(data, "green")
        else:
            write_concept_dataset(data, concept, count=12)
        for seed in (int(s) for s in args.seeds.split(",")):
            options = {**json.loads(args.options or "{}"), "seed": seed, "overwrite": True}
            if args.model:
                options["model"] = args.model
            start = time.perf_counter()
            outcome = engine.train(_params("embedding" if kind == "known" else kind, name, data, args.steps, options))
            seconds = time.perf_counter() - start
            size = f"{outcome.path.stat().st_size / 1e6:.2f} MB"
            for text in (prompt, *OTHER_PLACES.get(kind, ()), "1girl"):
                if (text, feature) not in judged or text != "1girl":
                    judged[text, feature] = _rate(engine, text, feature, args.images, args.model)
                rate = judged[text, feature]
                print(f"{kind:>12} {seed:>4} {seconds:8.1f} {text:>32} {rate:6.2f}  {size}", flush=True)


def _rate(engine: Any, prompt: str, feature: str, images: int, model: str | None = None) -> float:
    """The share of `images` images drawn for `prompt` (seeds 1000...) in which `describe` finds `feature`."""
    from emaki.demo import describe
    from emaki.params import GenerationParams

    result = engine.generate(GenerationParams.create(prompt=prompt, seed=1000, batch_size=images // 4, n_iter=4,
                                                     model=model), save=False)
    found = [describe(image.image) for image in result.images]
    return sum(FOUND[feature](d) for d in found) / len(found)


def _params(kind: str, name: str, data: Path, steps: int, options: dict[str, Any]) -> Any:
    from emaki.training.params import TrainingParams

    return TrainingParams.create(kind=kind, name=name, data=str(data), steps=steps, **options)


def build_checkpoint(path: Path) -> None:
    import torch

    from emaki.models.checkpoint import save_single_file
    from emaki.models.components import build_random_components
    from emaki.models.configs import sd15_config

    torch.set_num_threads(2)
    save_single_file(build_random_components(sd15_config(), seed=0), path, dtype=torch.float16)


def _dataset(size: int) -> Path:
    from emaki.demo.faces import draw_face, random_attributes

    folder = Path(tempfile.mkdtemp(prefix="emaki-train-speed-"))
    rng = random.Random(0)
    for i in range(4):
        draw_face(random_attributes(rng)).resize((size, size)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(CAPTION)
    return folder


def run_emaki(checkpoint: Path, size: int, steps: int) -> list[float]:
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.workspace import Workspace

    stamps: list[float] = []
    engine = Engine(Workspace(Path(tempfile.mkdtemp())), DevicePolicy.choose("fp32", threads=2))
    engine.train_embedding("bench", _dataset(size), steps, model=str(checkpoint), width=size, height=size,
                           preview_every=0, save_every=0, progress=lambda u: stamps.append(time.perf_counter()))
    return stamps


def run_diffusers(checkpoint: Path, size: int, steps: int) -> list[float]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from PIL import Image

    from emaki.models.loader import load_model_uncached

    parts = load_model_uncached(checkpoint).components
    unet, vae, text_encoder, tokenizer = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    embeddings = text_encoder.get_input_embeddings()
    embeddings.weight.requires_grad_(True)  # the diffusers example trains the whole matrix, masks the rest
    optimizer = torch.optim.AdamW([embeddings.weight], lr=5e-3, weight_decay=0.0)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    data = _dataset(size)
    with torch.no_grad():
        latents = []
        for path in sorted(data.glob("*.png")):
            pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
            latents.append(vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist.sample() * 0.18215)
    ids = tokenizer([f"* {CAPTION}"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    stamps = []
    for step in range(steps):
        x0 = latents[step % len(latents)]
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (1,))
        context = text_encoder(ids)[0]
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, context).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        stamps.append(time.perf_counter())
    return stamps


def speed(args: argparse.Namespace) -> None:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        print(f"building a random SD 1.5 checkpoint at {checkpoint} ...", flush=True)
        build_checkpoint(checkpoint)
    rows = {}
    for tool in ("diffusers", "emaki"):
        out = subprocess.run([sys.executable, __file__, "worker", "--tool", tool, "--checkpoint", str(checkpoint),
                              "--size", str(args.size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows[tool] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{tool:>9}: {rows[tool]['per_step']:.2f} s/step, peak RSS {rows[tool]['peak_rss_gb']:.2f} GB", flush=True)
    ratio = rows["diffusers"]["per_step"] / rows["emaki"]["per_step"]
    print(f"steps/s emaki / diffusers: {ratio:.3f} (at {args.size}², batch 1)")


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(2)
    run = run_emaki if args.tool == "emaki" else run_diffusers
    stamps = run(Path(args.checkpoint), args.size, args.steps)
    # The median of the intervals after the first two: the first steps of a process create oneDNN's
    # kernels and the backward pass's buffers (several times a warm step, in both tools).
    intervals = sorted(b - a for a, b in itertools.pairwise(stamps[2:]))
    per_step = intervals[len(intervals) // 2]
    print(json.dumps({"per_step": per_step, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--steps", type=int, default=400)
    q.add_argument("--images", type=int, default=40)
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    q.add_argument("--kinds", default="embedding,hypernetwork,lora", help="which runs, comma-separated")
    q.add_argument("--options", default="", help="extra TrainingParams fields as JSON (default: none)")
    q.add_argument("--model", default=None, help="checkpoint to train on and draw with (default: the demo model)")
    q.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (default: auto)")
    for name in ("speed", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--size", type=int, default=512)
        p.add_argument("--steps", type=int, default=7)
        p.add_argument("--checkpoint", default="/tmp/emaki-bench-sd15.safetensors")
        p.add_argument("--tool", choices=["emaki", "diffusers"])
    args = parser.parse_args()
    {"quality": quality, "speed": speed, "worker": worker}[args.what](args)


if __name__ == "__main__":
    main()

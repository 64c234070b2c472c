"""Runs whose images are recorded in tests/engine/golden/: the same parameters must give the same
pixels and the same infotext through today's engine. They were first recorded before the engine
redesign; a change of the shipped demo model records them again (`python tests/engine/golden_cases.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.engine.output import save_numbered_png
from emaki.networks import Embedding, Hypernetwork, save_embedding, save_hypernetwork
from emaki.params import GenerationParams
from emaki.workspace import Workspace

GOLDEN_DIR = Path(__file__).parent / "golden"

BASE: dict[str, Any] = {"prompt": "1girl, red hair, blue eyes, smile", "negative_prompt": "lowres",
                        "seed": 1, "steps": 12}

CASES: dict[str, dict[str, Any]] = {
    "txt2img": {},
    "dpmpp-batch": {"sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 5.0, "seed": 42,
                    "batch_size": 2, "n_iter": 2, "prompt": "1girl, (pink hair:1.2), green eyes"},
    "variation": {"subseed": 7, "subseed_strength": 0.3, "seed_resize_from_w": 48, "seed_resize_from_h": 48,
                  "sampler_name": "DPM++ SDE", "steps": 6},
    "editing-ddim": {"prompt": "1girl, [red hair:blue hair:0.5], [smile|open mouth]", "clip_skip": 2,
                     "eta_noise_seed_delta": 31337, "rng": "GPU", "sampler_name": "DDIM", "eta": 0.3,
                     "emphasis": "No norm"},
    "img2img": {"init_image": "@txt2img", "denoising_strength": 0.5, "resize_mode": "crop and resize",
                "width": 64, "height": 96, "prompt": "1girl, silver hair"},
    "hires-latent": {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 4, "denoising_strength": 0.6,
                     "hr_prompt": "1girl, red hair, closed eyes"},
    "hires-lanczos": {"enable_hr": True, "hr_resize_x": 96, "hr_upscaler": "Lanczos", "hr_sampler_name": "Euler",
                      "denoising_strength": 0.4, "steps": 6},
    "networks": {"prompt": "1girl, golden-style, red hair <hypernet:golden-hn:0.7>", "negative_prompt": "golden-neg",
                 "hypernetwork": "golden-hn2", "hypernetwork_strength": 0.5},
}


def make_networks(folder: Path) -> tuple[Path, Path]:
    """The embeddings and hypernetworks the `networks` case uses, drawn from fixed seeds
    (text width 128: the demo model's)."""
    embeddings, hypernetworks = folder / "embeddings", folder / "hypernetworks"
    g = torch.Generator().manual_seed(0)
    save_embedding(Embedding("golden-style", torch.randn(2, 128, generator=g) * 0.5), embeddings / "golden-style.pt")
    save_embedding(Embedding("golden-neg", torch.randn(1, 128, generator=g) * 0.5), embeddings / "golden-neg.pt")
    for name in ("golden-hn", "golden-hn2"):
        hn = Hypernetwork.create(name, (32, 64, 128), activation_func="relu", generator=g)
        with torch.no_grad():
            for module in hn.modules():
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        save_hypernetwork(hn, hypernetworks / f"{name}.pt")
    return embeddings, hypernetworks


def case_fields(name: str, golden_dir: Path = GOLDEN_DIR) -> dict[str, Any]:
    fields = BASE | CASES[name]
    if str(fields.get("init_image", "")).startswith("@"):
        fields["init_image"] = str(golden_dir / f"{fields['init_image'][1:]}-0.png")
    return fields


def golden_engine(home: Path) -> Engine:
    """The engine the cases run on: fp32, one thread, the networks of `make_networks` in `home`."""
    embeddings, hypernetworks = make_networks(home)
    workspace = Workspace(home).with_folders("embeddings", [embeddings]).with_folders("hypernetworks", [hypernetworks])
    return Engine(workspace, DevicePolicy.choose("fp32", "cpu", threads=1))


def record(home: Path, golden_dir: Path = GOLDEN_DIR) -> None:
    """Run every case and write its images as `<case>-<n>.png` (txt2img first: img2img starts from it)."""
    engine = golden_engine(home)
    for old in golden_dir.glob("*.png"):
        old.unlink()
    for name in CASES:
        result = engine.generate(GenerationParams.create(**case_fields(name, golden_dir)), save=False)
        for n, made in enumerate(result.images):
            save_numbered_png(made.image, made.infotext, golden_dir, lambda n=n: n, lambda i, name=name: f"{name}-{i}.png")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        record(Path(home))

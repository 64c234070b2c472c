"""Measurements of the demo model through the real engine (`Engine.generate`), read by `describe`.

Shared by `benchmarks/demo_quality.py` (the full measurement) and `tests/demo/` (small sizes).
Every measurement is deterministic: prompts come from `random.Random(seed)`, image seeds are
fixed.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from emaki.demo.describe import describe, hair_rgb
from emaki.demo.faces import caption, random_attributes

if TYPE_CHECKING:
    from emaki.engine import Engine


def measuring_engine() -> Engine:
    """An engine over a scratch workspace: measurements read and write nothing of the user's."""
    from emaki.engine import Engine  # the engine imports this package's siblings
    from emaki.workspace import Workspace

    return Engine(Workspace(Path(tempfile.mkdtemp(prefix="emaki-quality-"))))


def generate_images(prompt: str, seeds: list[int], *, negative: str = "", steps: int = 20,
                    sampler: str = "Euler a", cfg: float = 7.0, model: str | None = None,
                    batch: int = 8, engine: Engine | None = None) -> list[Image.Image]:
    """Images for `seeds` (batched where they are consecutive), as `emaki generate` makes them."""
    engine = engine or measuring_engine()
    images: list[Image.Image] = []
    i = 0
    while i < len(seeds):
        n = 1
        while n < batch and i + n < len(seeds) and seeds[i + n] == seeds[i] + n:
            n += 1
        images += _generate(engine, prompt, negative, seeds[i], n, steps, sampler, cfg, model)
        i += n
    return images


def _generate(engine: Engine, prompt: str, negative: str, seed: int, n: int, steps: int, sampler: str,
              cfg: float, model: str | None) -> list[Image.Image]:
    from emaki.params import GenerationParams

    params = GenerationParams(prompt=prompt, negative_prompt=negative, seed=seed, steps=steps,
                              sampler_name=sampler, cfg_scale=cfg, batch_size=n, model=model)
    return [g.image for g in engine.generate(params, save=False).images]


@dataclass
class PromptAccuracy:
    """Per-attribute accuracy over random training-distribution prompts."""

    n: int
    correct: Counter = field(default_factory=Counter)
    counted: Counter = field(default_factory=Counter)
    confusions: Counter = field(default_factory=Counter)

    def accuracy(self, attribute: str) -> float:
        return self.correct[attribute] / max(1, self.counted[attribute])

    def summary(self) -> dict[str, Any]:
        return {a: {"accuracy": round(self.accuracy(a), 4), "n": self.counted[a]} for a in sorted(self.counted)}


ATTRIBUTES = ("hair_color", "eye_color", "hair_length", "expression", "background", "accessory")


def prompt_accuracy(n: int, *, seed: int = 0, model: str | None = None, steps: int = 20,
                    cfg: float = 7.0, sampler: str = "Euler a") -> PromptAccuracy:
    """Generate `n` images from random full captions; score each attribute with `describe`.

    Eye colour is scored only where the prompt has open eyes (closed eyes hide the colour).
    """
    rng = random.Random(seed)
    result = PromptAccuracy(n)
    engine = measuring_engine()
    for i in range(n):
        attrs = random_attributes(rng)
        prompt = caption(attrs, rng)
        image = generate_images(prompt, [seed * 100_000 + i], model=model, steps=steps, cfg=cfg,
                                sampler=sampler, engine=engine)[0]
        got = describe(image)
        want = attrs.to_dict()
        for a in ATTRIBUTES:
            if a == "eye_color" and attrs.expression == "closed eyes":
                continue
            result.counted[a] += 1
            if got[a] == want[a]:
                result.correct[a] += 1
            else:
                result.confusions[(a, want[a], got[a])] += 1
    return result


def hair_color_rate(images: list[Image.Image], color: str) -> float:
    return sum(describe(im)["hair_color"] == color for im in images) / max(1, len(images))


def hair_color_mix(images: list[Image.Image]) -> Counter:
    return Counter(describe(im)["hair_color"] for im in images)


def blue_minus_red(images: list[Image.Image]) -> float:
    """Mean (blue - red) of the hair colour, -255..255: how far a red/blue mix leans to blue."""
    return sum(b - r for r, _, b in map(hair_rgb, images)) / max(1, len(images))

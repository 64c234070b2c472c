"""Per-image noise as A1111 draws it: one generator per image, seeded with seed + index."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ImageRNG:
    """Initial latent noise and every later draw for a batch of images (A1111 `rng.ImageRNG`).

    Image i of the batch has its own generator seeded with `seeds[i]`; `first()` draws the
    initial noise from it and `next()` continues the same stream, so an image does not depend
    on the batch it was made in.
    """

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], *, source: str = "CPU") -> None:
        if source != "CPU":
            raise NotImplementedError(f"RNG source {source!r}")
        self.shape = tuple(shape)
        self.seeds = list(seeds)
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in self.seeds]

    def _draw(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])

    def first(self) -> torch.Tensor:
        return self._draw()

    def next(self) -> torch.Tensor:
        return self._draw()

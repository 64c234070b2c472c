"""Per-image noise as A1111 v1.10.1 draws it (`modules/rng.py`): one generator per image, seeded
with that image's seed, so an image does not depend on the batch it was made in.

Sources: "CPU" (torch's CPU generator, A1111's default), "GPU" (the device's own generator;
on a machine without CUDA it is the CPU generator, as in A1111) and "NV" (`PhiloxGenerator`:
CUDA's `torch.randn` reproduced on the CPU). Variation seeds (`subseeds`, `subseed_strength`)
mix a second noise in by A1111's slerp; "seed resize from" draws the noise at another size and
pastes it centred; ENSD re-seeds every generator with seed + ENSD after the initial noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emaki.errors import ParamsError
from emaki.sampling.philox import PhiloxGenerator

Tensor = torch.Tensor
SOURCES = ("CPU", "GPU", "NV")


def _gpu_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class _Stream:
    """A seeded randn stream from one source."""

    def __init__(self, seed: int, source: str) -> None:
        self.source = source
        if source == "NV":
            self.philox = PhiloxGenerator(seed)
        else:
            device = torch.device("cpu") if source == "CPU" else _gpu_device()
            self.generator = torch.Generator(device).manual_seed(int(seed))

    def randn(self, shape: Sequence[int]) -> Tensor:
        if self.source == "NV":
            return torch.from_numpy(self.philox.randn(shape))
        gen = self.generator
        return torch.randn(tuple(shape), generator=gen, device=gen.device).cpu()


def slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's spherical interpolation of two per-image noises (C, H, W).

    Norms and angles are taken along dim 1 (per channel and column), and in the near-parallel
    case it falls back to `low * val + high * (1 - val)` — both exactly as A1111 does, so that
    variation seeds give A1111's images.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(1) * high


class ImageRNG:
    """Initial latent noise and every later draw for a batch of images (A1111 `rng.ImageRNG`).

    `shape` is one image's latent shape (C, H, W); `seeds` has one seed per image. `first()` is
    the initial noise (variation seed and seed resize applied); `next()` continues each image's
    own stream (after ENSD re-seeding), one (batch, C, H, W) tensor per call. The first `next()`
    before any `first()` returns `first()`, as in A1111.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        source: str = "CPU",
        eta_noise_seed_delta: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if source not in SOURCES:
            raise ParamsError(f"RNG source {source!r}; expected one of: {', '.join(SOURCES)}")
        if len(shape) != 3:
            raise ParamsError(f"latent shape must be (C, H, W), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h)
        self.seed_resize_from_w = int(seed_resize_from_w)
        self.source = source
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.streams = [_Stream(s, source) for s in self.seeds]
        self.is_first = True

    def _noise_shape(self) -> tuple[int, int, int]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape  # type: ignore[return-value]
        return (self.shape[0], self.seed_resize_from_h // 8, self.seed_resize_from_w // 8)

    def first(self) -> Tensor:
        """The initial noise, one image per seed, stacked: (batch, C, H, W)."""
        self.is_first = False
        noise_shape = self._noise_shape()
        xs = []
        for i, (seed, stream) in enumerate(zip(self.seeds, self.streams, strict=True)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                subnoise = _Stream(subseed, self.source).randn(noise_shape)
            if noise_shape != self.shape:
                noise = _Stream(seed, self.source).randn(noise_shape)
            else:
                noise = stream.randn(self.shape)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = _paste_centred(stream.randn(self.shape), noise)
            xs.append(noise)
        if self.eta_noise_seed_delta:
            self.streams = [_Stream(s + self.eta_noise_seed_delta, self.source) for s in self.seeds]
        return torch.stack(xs).to(self.device)

    def next(self) -> Tensor:
        """The next draw of every image's stream: (batch, C, H, W)."""
        if self.is_first:
            return self.first()
        return torch.stack([s.randn(self.shape) for s in self.streams]).to(self.device)

    def noise_sampler(self) -> NoiseSamplerFromRNG:
        """A sampler `noise_sampler(sigma, sigma_next)` that returns `next()` (A1111's `randn_like`)."""
        return NoiseSamplerFromRNG(self)


class NoiseSamplerFromRNG:
    """`noise_sampler(sigma, sigma_next) -> rng.next()` moved to the latent's device and dtype."""

    def __init__(self, rng: ImageRNG, like: Tensor | None = None) -> None:
        self.rng = rng
        self.like = like

    def __call__(self, sigma: object = None, sigma_next: object = None) -> Tensor:
        x = self.rng.next()
        return x if self.like is None else x.to(self.like.device, self.like.dtype)


def _paste_centred(x: Tensor, noise: Tensor) -> Tensor:
    """Put `noise` (C, h, w) in the centre of `x` (C, H, W), cropping it if larger (A1111's resize)."""
    dx = (x.shape[2] - noise.shape[2]) // 2
    dy = (x.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    x = x.clone()
    x[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return x

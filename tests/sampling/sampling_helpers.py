"""Shared by the sampler tests: a toy denoiser and seeded noise streams."""

from __future__ import annotations

from typing import Any

import torch

from emaki.sampling import model_sigmas, sd1_alphas_cumprod


class ToyDenoiser:
    """D(x; sigma) of a Gaussian data set (mean m, variance v) plus a small nonlinearity.

    Exact for the Gaussian part: D = (v x + sigma^2 m) / (v + sigma^2); the sin term makes
    multistep and higher-order errors visible. Counts its calls.
    """

    def __init__(self) -> None:
        self.model_sigmas = model_sigmas(sd1_alphas_cumprod())
        self.calls = 0
        self.sigmas_seen: list[float] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        self.sigmas_seen.append(float(sigma[0]))
        s = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        v, m = 0.5, 0.2
        return (v * x + s**2 * m) / (v + s**2) + 0.05 * torch.sin(3 * x) / (1 + s)


class NoiseStream:
    """A seeded stream of standard normal draws, shaped like `like`; counts the draws."""

    def __init__(self, like: torch.Tensor, seed: int = 1234) -> None:
        self.like = like
        self.gen = torch.Generator().manual_seed(seed)
        self.draws = 0

    def next(self) -> torch.Tensor:
        self.draws += 1
        return torch.randn(self.like.shape, generator=self.gen, dtype=self.like.dtype)

    def __call__(self, sigma: Any = None, sigma_next: Any = None) -> torch.Tensor:
        return self.next()


class TorchWithStream:
    """What A1111 does to k-diffusion's `torch`: `randn_like` reads from a stream."""

    def __init__(self, stream: NoiseStream) -> None:
        self.stream = stream

    def randn_like(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.stream.next()

    def __getattr__(self, item: str) -> Any:
        return getattr(torch, item)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())

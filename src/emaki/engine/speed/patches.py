"""What the speed features share: per-run forward replacements on UNet modules (undone by the
run's `ModelHandle`), and the count of sampler steps and UNet calls within a sampling pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Batch, Extension, Run
from emaki.sampling.progress import StepInfo

Forward = Callable[..., Any]


def replace_forward(handle: ModelHandle, module: torch.nn.Module, make: Callable[[Forward], Forward]) -> None:
    """`module.forward = make(current forward)` for this run; the module's own forward (or an
    earlier replacement) comes back when the run ends."""
    own = module.__dict__.get("forward")
    module.forward = make(module.forward)

    def undo() -> None:
        if own is None:
            del module.__dict__["forward"]
        else:
            module.forward = own

    handle.on_exit(undo)


def hidden_states(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The first input of a diffusers block or attention: positional or `hidden_states=`."""
    return args[0] if args else kwargs["hidden_states"]


class PassCounting(Extension):
    """An extension that acts by sampler step and by UNet call. In each sampling pass (a batch,
    the hires pass) `step` is the sampler step being computed (0-based; `after_step` moves it)
    and `unet_call` numbers the UNet forwards of the current denoiser call (two when the
    prompt and negative prompt differ in chunk count); outside a denoiser call `in_call` is
    False."""

    def __init__(self) -> None:
        self.step = 0
        self.unet_call = -1
        self.in_call = False

    def count_unet_calls(self, handle: ModelHandle) -> None:
        """Number the UNet's forwards (calling `before_unet` with each one's batch size)."""

        def counted(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.unet_call += 1
            self.before_unet((args[0] if args else kwargs["sample"]).shape[0])

        handle.on_exit(handle.components.unet.register_forward_pre_hook(counted, with_kwargs=True).remove)

    def wrap_denoiser(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        self.step = 0
        self.start_pass(run, denoiser)
        return CountedCalls(denoiser, self)

    def after_step(self, run: Run, batch: Batch, step: StepInfo) -> None:
        self.step = step.step + 1

    def start_pass(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> None:
        """A sampling pass begins: drop what the last one cached."""

    def before_call(self) -> None:
        """A denoiser call begins (`step` is its sampler step)."""

    def before_unet(self, rows: int) -> None:
        """A UNet forward of `rows` latents begins (`unet_call` numbers it)."""


class CountedCalls:
    """A denoiser that tells `counter` where each call begins and ends; anything else (the
    `model_sigmas` some samplers read) is the wrapped denoiser's."""

    def __init__(self, denoiser: Callable[..., torch.Tensor], counter: PassCounting) -> None:
        self.denoiser, self.counter = denoiser, counter

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        counter = self.counter
        counter.unet_call, counter.in_call = -1, True
        counter.before_call()
        try:
            return self.denoiser(x, sigma)
        finally:
            counter.in_call = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.denoiser, name)

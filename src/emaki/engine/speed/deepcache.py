"""DeepCache-style feature caching (Ma et al. 2023, "DeepCache: Accelerating Diffusion Models
for Free"): the UNet's deep features change slowly from step to step, so every `interval`-th
sampler step runs the whole UNet and keeps the output of its second-to-last up block; the steps
in between run only the outer level — `conv_in`, the first down block (whose skip connections
the last up block takes) and the last up block — on top of that kept output:

    full step:    h = up[-2](... mid(down[1:](down[0](conv_in(x)))) ...)     (h kept)
    cached step:  out = up[-1](h_kept, skips of down[0](conv_in(x)))

Granularity is the block (diffusers' `UNet2DConditionModel.down_blocks`/`up_blocks`); the deep
blocks are stood in for by stubs that return their input (their results are not used), and
the second-to-last up block by the kept features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Run
from emaki.engine.speed.patches import Forward, PassCounting, hidden_states, replace_forward


class DeepFeatureCache(PassCounting):
    """`--cache-interval N`: the whole UNet on every N-th step of a pass (the first included),
    the outer level alone on the others."""

    def __init__(self, interval: int) -> None:
        super().__init__()
        self.interval = interval
        self.kept: dict[int, torch.Tensor] = {}  # second-to-last up block's output, by UNet call of a denoiser call
        self.reusing = False  # the UNet call under way runs the outer level only
        self.rows = 0  # its batch size

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        unet = handle.components.unet
        if len(unet.up_blocks) < 2:  # nothing deeper than the outer level to reuse
            return
        self.count_unet_calls(handle)
        for block in list(unet.down_blocks)[1:]:
            replace_forward(handle, block, self._skipped_down(block))
        if unet.mid_block is not None:
            replace_forward(handle, unet.mid_block, self._skipped(lambda h: h))
        for block in list(unet.up_blocks)[:-2]:
            replace_forward(handle, block, self._skipped(lambda h: h))
        replace_forward(handle, unet.up_blocks[-2], self._skipped(self._kept_rows))
        handle.on_exit(handle.components.unet.up_blocks[-2].register_forward_hook(self._keep).remove)

    def start_pass(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> None:
        self.kept = {}

    def before_unet(self, rows: int) -> None:
        """Reuse when this step is not a full one and the features kept from the same UNet call
        of a full step have at least as many rows (a call without the negative prompt takes the
        leading, conditional rows: `CFGDenoiser` puts them first)."""
        kept = self.kept.get(self.unet_call) if self.in_call else None
        self.reusing = kept is not None and self.step % self.interval != 0 and kept.shape[0] >= rows
        self.rows = rows

    def _kept_rows(self, h: torch.Tensor) -> torch.Tensor:
        return self.kept[self.unet_call][: self.rows]

    def _keep(self, block: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if self.in_call and not self.reusing:
            self.kept[self.unet_call] = output

    def _skipped(self, stand_in: Callable[[torch.Tensor], Any]) -> Callable[[Forward], Forward]:
        def make(forward: Forward) -> Forward:
            def patched(*args: Any, **kwargs: Any) -> Any:
                if self.reusing:
                    return stand_in(hidden_states(args, kwargs))
                return forward(*args, **kwargs)

            return patched

        return make

    def _skipped_down(self, block: torch.nn.Module) -> Callable[[Forward], Forward]:
        """A down block returns its output and one skip connection per resnet and downsampler:
        the stub returns as many (the up blocks that take them are stubs too)."""
        resnets: torch.nn.ModuleList = block.resnets  # type: ignore[assignment]
        downsamplers: torch.nn.ModuleList | None = getattr(block, "downsamplers", None)
        outputs = len(resnets) + len(downsamplers or ())
        return self._skipped(lambda h: (h, (h,) * outputs))

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return {"Cache interval": self.interval}

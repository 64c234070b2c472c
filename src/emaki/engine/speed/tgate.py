"""T-GATE-style gating (Zhang et al. 2024, "Cross-Attention Makes Inference Cumbersome in
Text-to-Image Diffusion Models"): cross-attention converges in the first steps, after which the
text hardly changes the picture. Up to `gate_step` every step runs as usual and each
cross-attention's output is kept; from `gate_step` on, each cross-attention returns the mean of
its last conditional and unconditional outputs, and — the conditioning no longer mattering — the
negative prompt's pass is dropped (`CFGDenoiser.skip_uncond`):

    kept_r = (a_cond[r] + a_uncond[image of r]) / 2        (the last step before the gate)
    step ≥ gate:  attn2(h) = kept_r,  x0 = conditional pass alone

Self-attention is not gated (T-GATE's later variant caches it too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Run
from emaki.engine.speed.guidance import guidance_of
from emaki.engine.speed.patches import Forward, PassCounting, hidden_states, replace_forward
from emaki.sampling.denoiser import CFGDenoiser


def cross_attentions(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The UNet's cross-attention layers by name (diffusers' `BasicTransformerBlock.attn2`)."""
    return {name: module for name, module in unet.named_modules()
            if name.endswith(".attn2") and getattr(module, "is_cross_attention", False)}


class CrossAttentionGate(PassCounting):
    """`--gate-step S`: from sampler step S of each pass on, cross-attention is reused and the
    negative prompt dropped."""

    def __init__(self, gate_step: int) -> None:
        super().__init__()
        self.gate_step = gate_step
        # name → (denoiser call, its outputs by UNet call): the layer's last outputs before the gate
        self.outputs: dict[str, tuple[int, dict[int, torch.Tensor]]] = {}
        self.calls = 0  # denoiser calls in this pass
        self.kept: dict[str, torch.Tensor] | None = None  # the gated outputs, made at the gate
        self.guidance: CFGDenoiser | None = None

    @property
    def gated(self) -> bool:
        return self.step >= self.gate_step

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        self.count_unet_calls(handle)
        for name, module in cross_attentions(handle.components.unet).items():
            replace_forward(handle, module, self._gated(name))

    def start_pass(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> None:
        self.outputs, self.kept, self.calls = {}, None, 0
        self.guidance = guidance_of(denoiser)
        self.guidance.skip_uncond.append(lambda call, sigma: self.gated)

    def before_call(self) -> None:
        self.calls += 1
        if self.gated and self.kept is None:
            assert self.guidance is not None
            self.kept = {name: kept for name, (_, by_call) in self.outputs.items()
                         if (kept := self._mean(by_call, self.guidance)) is not None}
            self.outputs = {}

    @staticmethod
    def _mean(by_call: dict[int, torch.Tensor], guidance: CFGDenoiser) -> torch.Tensor | None:
        """Each conditional row's output averaged with its image's unconditional one. The rows
        of a denoiser call are its UNet calls' in order: conditional rows, then unconditional."""
        rows = torch.cat([by_call[call] for call in sorted(by_call)])
        owners = guidance.owners
        if rows.shape[0] == len(owners):  # the last call before the gate had no negative pass
            return rows
        if rows.shape[0] != len(owners) + len(guidance.conds):
            return None
        uncond = rows[len(owners):]
        return (rows[: len(owners)] + uncond[owners]) / 2

    def _gated(self, name: str) -> Callable[[Forward], Forward]:
        def make(forward: Forward) -> Forward:
            def patched(*args: Any, **kwargs: Any) -> Any:
                if not self.in_call:
                    return forward(*args, **kwargs)
                if self.kept is not None:
                    kept = self.kept.get(name)
                    if kept is not None and kept.shape == hidden_states(args, kwargs).shape:
                        return kept
                    return forward(*args, **kwargs)
                output = forward(*args, **kwargs)
                call, by_call = self.outputs.get(name, (-1, {}))
                if call != self.calls:  # a layer a cached step skipped keeps its outputs of an earlier call
                    self.outputs[name] = call, by_call = self.calls, {}
                by_call[self.unet_call] = output
                return output

            return patched

        return make

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return {"Gate step": self.gate_step}

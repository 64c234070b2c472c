"""A per-run handle on a cached model: every patch a run makes goes through it and is undone
when the run ends, however it ends (ComfyUI's ModelPatcher is the model for this)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import torch

from emaki.models.components import SDComponents
from emaki.models.loader import LoadedModel


class ModelHandle:
    """`with ModelHandle(model) as handle:` — patch through `handle`; leaving the block restores
    the cached model exactly (last patch undone first), also after an error or an interrupt."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._undo: list[Callable[[], None]] = []

    @property
    def components(self) -> SDComponents:
        return self.model.components

    def on_exit(self, undo: Callable[[], None]) -> None:
        """Register how to undo a patch made outside the handle's own methods."""
        self._undo.append(undo)

    def add_forward_pre_hook(self, module: torch.nn.Module, hook: Callable[..., object]) -> None:
        """Run `hook(module, args)` before each forward of `module` during this run."""
        self._undo.append(module.register_forward_pre_hook(hook).remove)

    def set_attribute(self, module: torch.nn.Module, name: str, value: object) -> None:
        """Set a plain attribute of `module` (a convolution's `padding_mode`) for this run; the
        old value is put back on exit."""
        original = getattr(module, name)
        setattr(module, name, value)
        self._undo.append(lambda: setattr(module, name, original))

    @torch.no_grad()
    def replace_weight(self, module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
        """Swap a parameter's tensor for this run (LoRA-style weight patches); the original
        tensor object is put back on exit, untouched."""
        original = getattr(module, name)
        setattr(module, name, torch.nn.Parameter(value.to(original.dtype), requires_grad=False))
        self._undo.append(lambda: setattr(module, name, original))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        while self._undo:
            self._undo.pop()()

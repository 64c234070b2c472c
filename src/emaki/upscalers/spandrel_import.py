"""Importing spandrel on machines whose torch has no matching torchvision.

spandrel (MIT; A1111, ComfyUI and InvokeAI load upscalers with it) lists torchvision as a
dependency, but only two architectures we do not use as upscalers touch it: RestoreFormer (a
face restorer: `normalize`) and LaMa (inpainting: `rotate`). Both import it when spandrel is
imported. PyPI's torchvision wheels are built against CUDA torch and do not load with the CPU
torch emaki pins, so emaki installs spandrel without its dependencies (docs/design-notes.md)
and, when torchvision is absent, lends spandrel three names for the length of its import only.
Calling them raises an error that names what is missing; nothing else ever sees them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, NoReturn

from emaki.errors import ModelLoadError

_INSTALL = "pip install --no-deps 'spandrel>=0.4.2,<0.5' einops"


def _needs_torchvision(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise ModelLoadError("this model's architecture needs torchvision, which is not installed "
                         "(emaki's upscalers do not)")


def _stand_ins() -> dict[str, types.ModuleType]:
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.normalize = _needs_torchvision  # type: ignore[attr-defined]
    functional.rotate = _needs_torchvision  # type: ignore[attr-defined]
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear", NEAREST="nearest")  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    root = types.ModuleType("torchvision")
    root.transforms = transforms  # type: ignore[attr-defined]
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


def import_spandrel() -> types.ModuleType:
    """The `spandrel` module; a clear error when it is not installed."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if importlib.util.find_spec("spandrel") is None:
        raise ModelLoadError(f"upscaler models need the spandrel package; install it with: {_INSTALL}")
    if importlib.util.find_spec("torchvision") is not None:
        try:
            return importlib.import_module("spandrel")
        except Exception as e:  # noqa: BLE001 (a torchvision built for another torch fails inside its import)
            raise ModelLoadError(f"spandrel could not be imported ({type(e).__name__}: {e}); a torchvision "
                                 "built for another torch breaks it: uninstall torchvision, spandrel's upscalers "
                                 "do not need it") from None
    stand_ins = _stand_ins()
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module("spandrel")
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]

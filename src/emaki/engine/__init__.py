"""The engine layer: `Engine` runs generations through the staged pipeline (`pipeline`,
`stages`) with its extensions (`img2img`, `hires`, `networks`), on a `Workspace`.

Names are imported on first use: `emaki.engine.policy` and friends stay cheap to import for
CLI commands that never run a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emaki.engine.engine import Engine, resolve_vae
    from emaki.engine.run import (
        Cancel,
        Extension,
        GeneratedImage,
        GenerationProgress,
        GenerationResult,
    )

_EXPORTS = {
    "Engine": "emaki.engine.engine",
    "resolve_vae": "emaki.engine.engine",
    "Cancel": "emaki.engine.run",
    "Extension": "emaki.engine.run",
    "GeneratedImage": "emaki.engine.run",
    "GenerationProgress": "emaki.engine.run",
    "GenerationResult": "emaki.engine.run",
}
__all__ = ["Cancel", "Engine", "Extension", "GeneratedImage", "GenerationProgress", "GenerationResult",
           "resolve_vae"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'emaki.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

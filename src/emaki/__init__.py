"""emaki: local anime-style image generation with Stable Diffusion 1.x checkpoints.

    import emaki
    from emaki.params import GenerationParams
    result = emaki.generate(GenerationParams.create(prompt="1girl, red hair", seed=1))

(as in the README, whose examples `tests/test_readme.py` runs). The Python API is a surface like
the CLI: `default_engine()` builds its `Workspace` from the environment (`EMAKI_HOME`,
`EMAKI_A1111`). Build an `emaki.engine.Engine` yourself for anything else.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from emaki.errors import EmakiError
from emaki.version import __version__

if TYPE_CHECKING:
    from emaki.engine import Engine, GenerationResult
    from emaki.params import GenerationParams


__all__ = ["EmakiError", "__version__", "default_engine", "generate"]


@functools.lru_cache(maxsize=1)
def default_engine() -> Engine:
    """The engine `emaki.generate` uses: the environment's workspace, this machine's policy.
    Made once (it holds the loaded model) and kept."""
    from emaki.engine import Engine  # the engine pulls in torch and diffusers: only when asked for
    from emaki.workspace import workspace_from_environment

    return Engine(workspace_from_environment(os.environ))


def generate(params: GenerationParams, **options: Any) -> GenerationResult:
    """Generate images with the default engine (`Engine.generate`: `progress`, `cancel`,
    `save`, `out_dir`)."""
    return default_engine().generate(params, **options)

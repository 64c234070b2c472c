"""emaki: local anime-style image generation with Stable Diffusion 1.x checkpoints."""

from emaki.errors import EmakiError

__version__ = "0.1.0"

__all__ = ["EmakiError", "__version__"]

"""Upscalers (issue 17): A1111's built-in ones and ESRGAN-family model files through spandrel,
tiled with blended seams. Used by `Engine.upscale`, `emaki upscale` and the hires fix.

- `registry`: names → upscalers (built-ins, the workspace's model files, A1111's known names);
- `loading`: model files → spandrel models, read safely (no TorchScript, restricted pickles);
- `tiling`: overlapping tiles blended with linear ramps;
- `upscale`: A1111's passes-then-Lanczos, and the `extras` infotext.
"""

from __future__ import annotations

from emaki.upscalers.loading import (
    UpscalerCache,
    UpscalerModel,
    describe_upscaler,
    load_upscaler_model,
)
from emaki.upscalers.registry import (
    IMAGE_UPSCALERS,
    KNOWN_MODELS,
    LATENT_UPSCALERS,
    Upscaler,
    find_upscaler,
    list_upscalers,
)
from emaki.upscalers.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from emaki.upscalers.upscale import (
    UpscaleProgress,
    extras_infotext,
    resize_with_model,
    upscale_image,
)

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "IMAGE_UPSCALERS", "KNOWN_MODELS", "LATENT_UPSCALERS", "UpscaleProgress",
           "Upscaler", "UpscalerCache", "UpscalerModel", "describe_upscaler", "extras_infotext", "find_upscaler",
           "list_upscalers", "load_upscaler_model", "resize_with_model", "upscale_image"]

"""Upscaling a picture as A1111's `Upscaler.upscale` does: the model runs again while the image
is still smaller than the target (at most three passes), then Lanczos resamples to the target,
whose sides A1111 rounds down to multiples of 8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emaki.errors import EmakiError, ParamsError
from emaki.infotext import format_number, quote
from emaki.upscalers.loading import UpscalerModel
from emaki.upscalers.registry import IMAGE_UPSCALERS, Upscaler
from emaki.upscalers.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    check_tiling,
    tile_count,
    upscale_tiled,
)

MAX_PASSES = 3  # A1111's loop in `Upscaler.upscale`


@dataclass(frozen=True)
class UpscaleProgress:
    """One tile done: `tile` of `tiles` in the whole upscale (every model pass counted)."""

    tile: int
    tiles: int


UpscaleCallback = Callable[[UpscaleProgress], None]


def open_picture(path: str | Path) -> Image.Image:
    """The image file at `path`, read in full (its text chunks stay in `.info`)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened
    except FileNotFoundError:
        raise EmakiError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise EmakiError(f"{path}: not a readable image ({e})") from None


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB picture as (1, 3, H, W) float32 in [0, 1]. Models get RGB, as spandrel documents
    (A1111 hands them BGR, a leftover of its OpenCV days)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    array = (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's target of an upscale by `scale`: each side times `scale`, rounded down to a
    multiple of 8 (at least 8).

    >>> scaled_size(100, 75, 2)
    (200, 144)
    """
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def model_passes(size: tuple[int, int], model_scale: int, target: tuple[int, int]) -> list[tuple[int, int]]:
    """The input size of each model pass: one at least, more while the image is smaller than
    `target` and the model enlarges it (at most `MAX_PASSES`).

    >>> model_passes((64, 64), 2, (512, 512))
    [(64, 64), (128, 128), (256, 256)]
    >>> model_passes((64, 64), 4, (128, 128))
    [(64, 64)]
    """
    passes = [size]
    width, height = size
    while len(passes) < MAX_PASSES and model_scale > 1:
        width, height = width * model_scale, height * model_scale
        if width >= target[0] and height >= target[1]:
            break
        passes.append((width, height))
    return passes


def upscale_with_model(image: Image.Image, model: UpscalerModel, target: tuple[int, int], *,
                       tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                       progress: UpscaleCallback | None = None) -> Image.Image:
    """The model's passes (tiled), then Lanczos to `target` when the sizes differ."""
    check_tiling(tile, overlap)
    if not model.tiles_well:
        tile = 0
    passes = model_passes(image.size, model.scale, target)
    total = sum(tile_count(w, h, tile, overlap) for w, h in passes)
    done = 0

    def on_tile() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(UpscaleProgress(done, total))

    for _ in passes:
        result = upscale_tiled(model, image_to_tensor(image), model.scale, tile=tile, overlap=overlap,
                               device=model.device, dtype=model.dtype, on_tile=on_tile)
        image = tensor_to_image(result)
    return image if image.size == target else image.resize(target, Image.Resampling.LANCZOS)


def check_upscale_options(scale: float, tile: int, overlap: int) -> None:
    """Refuse a bad factor or tiling before anything is loaded."""
    if not scale > 0 or scale > 16:
        raise ParamsError(f"scale: expected a factor above 0 and at most 16, got {scale}")
    check_tiling(tile, overlap)


def upscale_image(image: Image.Image, upscaler: Upscaler, scale: float, *, model: UpscalerModel | None = None,
                  tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                  progress: UpscaleCallback | None = None) -> Image.Image:
    """`image` upscaled by `scale` with `upscaler` (A1111's extras "Scale by"); a model
    upscaler needs its loaded `model`."""
    check_upscale_options(scale, tile, overlap)
    image = image.convert("RGB")
    target = scaled_size(image.width, image.height, scale)
    if upscaler.kind == "latent":
        raise ParamsError(f"upscaler: {upscaler.name!r} works on latents, in the hires fix only; "
                          f"pick {', '.join(IMAGE_UPSCALERS)} or a model")
    if upscaler.kind == "image":
        if upscaler.name == "Nearest":  # A1111 resizes by the factor, then to the rounded target
            image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.NEAREST)
        return image if image.size == target else image.resize(target, Image.Resampling.LANCZOS)
    if model is None:
        raise ParamsError(f"upscaler: {upscaler.name!r} is a model; load it first")
    return upscale_with_model(image, model, target, tile=tile, overlap=overlap, progress=progress)


def resize_with_model(image: Image.Image, model: UpscalerModel, size: tuple[int, int], *,
                      tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Image.Image:
    """A1111's `images.resize_image` with an upscaler ("just resize"), as the hires fix uses it:
    the model enlarges when `size` is larger, then Lanczos makes it exactly `size`."""
    scale = max(size[0] / image.width, size[1] / image.height)
    if scale > 1:
        image = upscale_with_model(image, model, scaled_size(image.width, image.height, scale),
                                   tile=tile, overlap=overlap)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def extras_infotext(scale: float, upscaler: str) -> str:
    """The `extras` text A1111's postprocessing writes next to the image's `parameters`.

    >>> extras_infotext(2.0, "R-ESRGAN 4x+")
    'Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+'
    """
    return f"Postprocess upscale by: {format_number(scale)}, Postprocess upscaler: {quote(upscaler)}"

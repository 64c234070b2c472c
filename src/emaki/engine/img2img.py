"""img2img inputs: the starting image fitted to the target size (A1111's resize modes) and
encoded to latents with the model's VAE.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emaki.errors import ParamsError


def open_init_image(path: str | Path) -> Image.Image:
    """The image as RGB (transparency composited on white, as A1111 flattens it)."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGBA")
    except FileNotFoundError:
        raise ParamsError(f"init_image: {path}: no such image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ParamsError(f"init_image: {path}: not a readable image ({e})") from None
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def default_size(image: Image.Image, factor: int) -> tuple[int, int]:
    """The image's own size, rounded down to a multiple of 8 (sizes are, as in A1111) and of the
    model's latent factor."""
    step = math.lcm(8, factor)
    return max(step, image.width // step * step), max(step, image.height // step * step)


def fit_image(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """A1111's resize modes: "just resize" stretches; "crop and resize" fills the frame and
    crops the overflow (centred); "resize and fill" fits inside and fills the bars by
    stretching the image's edge rows/columns."""
    if image.size == (width, height):
        return image
    lanczos = Image.Resampling.LANCZOS
    if mode == "just resize":
        return image.resize((width, height), lanczos)
    if mode == "crop and resize":
        scale = max(width / image.width, height / image.height)
        resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                               lanczos)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == "resize and fill":
        scale = min(width / image.width, height / image.height)
        inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), lanczos)
        canvas = inner.resize((width, height), lanczos)  # the bars take the stretched edges' colours
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    raise ParamsError(f"resize_mode: expected just resize, crop and resize or resize and fill, got {mode!r}")


@torch.inference_mode()
def encode_image(vae: torch.nn.Module, image: Image.Image, device: torch.device) -> torch.Tensor:
    """Scaled latents (1×C×h×w) of an RGB image: the mean of the VAE posterior, so the same
    image always gives the same latents (A1111 samples the posterior with the global RNG)."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    posterior = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
    scale = float(vae.config.get("scaling_factor", 0.18215))
    return posterior.mean.float() * scale

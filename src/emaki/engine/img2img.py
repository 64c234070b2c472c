"""img2img: the starting image fitted to the target size (A1111's resize modes), encoded to
latents with the model's VAE, and sampled from part-way down the sigma schedule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emaki.devices import DevicePolicy
from emaki.engine.run import Batch, Extension, Run
from emaki.engine.vae import encode_to_latents
from emaki.errors import ParamsError
from emaki.params import ImageTooLarge, check_input_size
from emaki.sampling import img2img_sigmas


def open_init_image(path: str | Path) -> Image.Image:
    """The image as RGB (transparency composited on white, as A1111 flattens it); its declared
    size is checked before its pixels are decoded (`check_input_size`)."""
    try:
        with Image.open(path) as opened:
            check_input_size(opened.width, opened.height, f"init_image: {path}")
            image = opened.convert("RGBA")
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"init_image: {path}: {e}") from None
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


def image_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB image as the VAE's input: 1×3×H×W in [-1, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


def encode_pixels(vae: Any, pixels: torch.Tensor, policy: DevicePolicy | torch.device) -> torch.Tensor:
    """Scaled latents (n×C×h×w) of VAE-input pixels (`encode_to_latents`): whole or in tiles as
    the run's `policy` says; given a device instead, whole on that device."""
    if isinstance(policy, torch.device):
        policy = DevicePolicy(policy, vae_tiling="off")
    return encode_to_latents(vae, pixels, policy)


def encode_image(vae: Any, image: Image.Image, policy: DevicePolicy | torch.device) -> torch.Tensor:
    """Scaled latents (1×C×h×w) of an RGB image (`encode_pixels`)."""
    return encode_pixels(vae, image_pixels(image), policy)


class Img2Img(Extension):
    """Start from `image` instead of noise: `denoising_strength` decides where on the schedule
    sampling starts (A1111's `setup_img2img_steps`); `initial_noise_multiplier` scales the noise
    added to it."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.fitted: Image.Image | None = None  # the image at the run's size
        self.latent: torch.Tensor | None = None

    def plan(self, run: Run) -> None:
        params = run.params
        assert params.width is not None and params.height is not None
        plan_img2img_sigmas(run)
        self.fitted = fit_image(self.image, params.width, params.height, params.resize_mode)
        self.latent = encode_image(run.model.components.vae, self.fitted, run.policy)

    def initial_latents(self, run: Run, batch: Batch) -> torch.Tensor | None:
        assert self.latent is not None
        return self.latent.expand(run.params.batch_size, -1, -1, -1)

    def initial_noise(self, run: Run, noise: torch.Tensor) -> torch.Tensor:
        multiplier = run.params.initial_noise_multiplier
        return noise if multiplier == 1 else noise * multiplier

    def infotext_fields(self, run: Run) -> dict[str, object]:
        multiplier = run.params.initial_noise_multiplier
        return {} if multiplier == 1 else {"Noise multiplier": float(multiplier)}


def plan_img2img_sigmas(run: Run) -> None:
    """Start part-way down the schedule (A1111's `setup_img2img_steps`)."""
    params = run.params
    run.start_sigma, run.sigmas = img2img_sigmas(run.sampler, run.sigmas, params.steps, params.denoising_strength)

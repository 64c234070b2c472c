"""Hires fix: A1111's second txt2img pass (`StableDiffusionProcessingTxt2Img.sample_hr_pass`).

The first pass's latents are upscaled — in latent space ("Latent" modes) or as decoded images
(Lanczos/Nearest/None, then encoded again) — and redrawn by an img2img pass at the target size
that runs exactly `hr_second_pass_steps` (or `steps`) steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from emaki.errors import ParamsError
from emaki.params import GenerationParams

# A1111's `shared.latent_upscale_modes`: interpolation mode and antialias.
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS,
                   "Nearest": Image.Resampling.NEAREST}


def target_size(params: GenerationParams) -> tuple[int, int]:
    """The second pass's size: `hr_resize_x/y` when given (one of them keeps the aspect ratio),
    else width and height times `hr_scale`; rounded down to multiples of 8."""
    assert params.width is not None and params.height is not None
    width, height = params.hr_resize_x, params.hr_resize_y
    if not width and not height:
        width, height = int(params.width * params.hr_scale), int(params.height * params.hr_scale)
    elif not height:
        height = width * params.height // params.width
    elif not width:
        width = height * params.width // params.height
    return max(8, width // 8 * 8), max(8, height // 8 * 8)


def check_upscaler(name: str) -> None:
    if name not in LATENT_UPSCALERS and name not in IMAGE_UPSCALERS:
        known = ", ".join([*LATENT_UPSCALERS, *IMAGE_UPSCALERS])
        raise ParamsError(f"hr_upscaler: {name!r} is not one emaki has (it has: {known})")


def hires_steps(params: GenerationParams) -> tuple[int, int]:
    """(schedule length, t_enc) of the second pass: A1111 passes its steps explicitly, so
    `setup_img2img_steps` makes the schedule `int(steps / strength)` long and runs `steps` of it."""
    steps = params.hr_second_pass_steps or params.steps
    strength = min(params.denoising_strength, 0.999)
    return max(steps, int(steps / strength)) if strength > 0 else steps, steps - 1


def upscale_latents(latents: torch.Tensor, size: tuple[int, int], factor: int, upscaler: str) -> torch.Tensor:
    mode, antialias = LATENT_UPSCALERS[upscaler]
    return F.interpolate(latents, size=(size[1] // factor, size[0] // factor), mode=mode, antialias=antialias)


def upscale_images(images: list[Image.Image], size: tuple[int, int], upscaler: str) -> list[Image.Image]:
    return [image.resize(size, IMAGE_UPSCALERS[upscaler]) for image in images]


"""Hires fix: A1111's second txt2img pass (`StableDiffusionProcessingTxt2Img.sample_hr_pass`).

The first pass's latents are upscaled — in latent space ("Latent" modes) or as decoded images
(Lanczos/Nearest/None, then encoded again) — and redrawn by an img2img pass at the target size
that runs exactly `hr_second_pass_steps` (or `steps`) steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from emaki.engine.img2img import encode_image
from emaki.engine.run import Batch, Extension, Run, StepCallback
from emaki.engine.stages import decode, denoise, encode_pair
from emaki.errors import ParamsError
from emaki.params import GenerationParams
from emaki.prompts import extract_networks
from emaki.sampling import Sampler, get_sampler, img2img_sigmas, parse_sampler_name, sigmas_for

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



class HiresFix(Extension):
    """The second pass, planned once per run: its sampler, sigmas and prompts; then, after each
    batch's first pass, upscale and redraw."""

    def plan(self, run: Run) -> None:
        params = run.params
        if params.init_image:
            raise ParamsError("enable_hr: the hires fix is a txt2img pass; it cannot be combined with init_image")
        check_upscaler(params.hr_upscaler)
        self.sampler: Sampler = (get_sampler(parse_sampler_name(params.hr_sampler_name)[0])
                                 if params.hr_sampler_name else run.sampler)
        if self.sampler.lcm != run.sampler.lcm:
            raise ParamsError("hr_sampler_name: LCM and other samplers cannot be mixed in one run")
        total, t_enc = hires_steps(params)
        full = sigmas_for(self.sampler, run.schedule, total, run.denoiser.model_sigmas)
        self.start_sigma, self.sigmas = img2img_sigmas(self.sampler, full, total, params.denoising_strength,
                                                       t_enc=t_enc)
        self.size = target_size(params)

    def prepare(self, run: Run) -> None:
        """The hires prompts default to the first pass's; their timelines follow the hires steps."""
        params = run.params
        steps = (params.hr_second_pass_steps or params.steps) * (2 if self.sampler.second_order else 1)
        prompt = extract_networks(params.hr_prompt)[0] if params.hr_prompt else run.prompt_text
        self.conds = encode_pair(run, prompt, params.hr_negative_prompt or params.negative_prompt, steps)

    def after_denoise(self, run: Run, batch: Batch, latents: torch.Tensor, on_step: StepCallback) -> torch.Tensor:
        params, parts = run.params, run.model.components
        factor = parts.config.vae_scale_factor
        if params.hr_upscaler in LATENT_UPSCALERS:
            upscaled = upscale_latents(latents.float(), self.size, factor, params.hr_upscaler)
        else:
            images = upscale_images(decode(run, latents), self.size, params.hr_upscaler)
            upscaled = torch.cat([encode_image(parts.vae, image, run.policy.device) for image in images])
        # A1111 draws the second pass's noise from new generators with the same seeds.
        return denoise(run, batch, upscaled, on_step, sampler=self.sampler, sigmas=self.sigmas,
                       start_sigma=self.start_sigma, conds=self.conds)

"""Hires fix: A1111's second txt2img pass (`StableDiffusionProcessingTxt2Img.sample_hr_pass`).

The first pass's latents are upscaled — in latent space ("Latent" modes) or as decoded images
(Lanczos/Nearest/None, or an upscaler model from the workspace such as "R-ESRGAN 4x+", then
encoded again) — and redrawn by an img2img pass at the target size that runs exactly
`hr_second_pass_steps` (or `steps`) steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from emaki.engine.image_prompts import ImagePrompt
from emaki.engine.img2img import encode_image
from emaki.engine.run import Batch, Extension, Run, StepCallback
from emaki.engine.stages import decode, denoise, encode_lists
from emaki.errors import ParamsError
from emaki.params import MAX_SIDE, GenerationParams
from emaki.prompts import extract_networks
from emaki.sampling import Sampler, get_sampler, img2img_sigmas, parse_sampler_name, sigmas_for
from emaki.upscalers import (
    IMAGE_UPSCALERS,
    LATENT_UPSCALERS,
    Upscaler,
    UpscalerModel,
    find_upscaler,
    load_upscaler_model,
    resize_with_model,
)
from emaki.workspace import Workspace

__all__ = ["IMAGE_UPSCALERS", "LATENT_UPSCALERS", "HiresFix", "check_upscaler", "hires_steps", "target_size"]


def target_size(params: GenerationParams) -> tuple[int, int]:
    """The second pass's size: `hr_resize_x/y` when given (one of them keeps the aspect ratio),
    else width and height times `hr_scale`; rounded down to multiples of 8. A side over
    `MAX_SIDE` raises `ParamsError` (each field is within its range, their product may not be)."""
    assert params.width is not None and params.height is not None
    width, height = params.hr_resize_x, params.hr_resize_y
    if not width and not height:
        width, height = int(params.width * params.hr_scale), int(params.height * params.hr_scale)
    elif not height:
        height = width * params.height // params.width
    elif not width:
        width = height * params.width // params.height
    if max(width, height) > MAX_SIDE:
        raise ParamsError(f"hr_scale / hr_resize_x / hr_resize_y: the hires size {width}x{height} is over "
                          f"{MAX_SIDE} pixels per side")
    return max(8, width // 8 * 8), max(8, height // 8 * 8)


def check_upscaler(name: str, workspace: Workspace | None = None) -> Upscaler:
    """The upscaler `hr_upscaler` names: a latent mode, Lanczos/Nearest/None, or — given the
    workspace — a model file in its upscaler folders, by name only (never a path: the name
    comes from requests and PNGs)."""
    return find_upscaler(name, workspace, field="hr_upscaler")


def hires_steps(params: GenerationParams) -> tuple[int, int]:
    """(schedule length, t_enc) of the second pass: A1111 passes its steps explicitly, so
    `setup_img2img_steps` makes the schedule `int(steps / strength)` long and runs `steps` of it."""
    steps = params.hr_second_pass_steps or params.steps
    strength = min(params.denoising_strength, 0.999)
    return max(steps, int(steps / strength)) if strength > 0 else steps, steps - 1


def upscale_latents(latents: torch.Tensor, size: tuple[int, int], factor: int, upscaler: str) -> torch.Tensor:
    mode, antialias = LATENT_UPSCALERS[upscaler]
    return F.interpolate(latents, size=(size[1] // factor, size[0] // factor), mode=mode, antialias=antialias)


def upscale_images(images: list[Image.Image], size: tuple[int, int], upscaler: str,
                   model: UpscalerModel | None = None) -> list[Image.Image]:
    """Decoded images to `size`: resampled, or enlarged by `model` then resampled (A1111's
    `resize_image` with an upscaler)."""
    if model is not None:
        return [resize_with_model(image, model, size) for image in images]
    return [image.resize(size, IMAGE_UPSCALERS[upscaler]) for image in images]


class HiresFix(Extension):
    """The second pass, planned once per run: its sampler, sigmas and prompts; then, after each
    batch's first pass, upscale and redraw. A model upscaler is loaded once, when the run is planned."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace
        self.model: UpscalerModel | None = None

    def plan(self, run: Run) -> None:
        params = run.params
        if params.init_image:
            raise ParamsError("enable_hr: the hires fix is a txt2img pass; it cannot be combined with init_image")
        upscaler = check_upscaler(params.hr_upscaler, self.workspace)
        if upscaler.kind == "model":
            assert upscaler.path is not None
            self.model = load_upscaler_model(upscaler.path).to(run.policy.device, run.policy.dtype)
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
        self.steps = (params.hr_second_pass_steps or params.steps) * (2 if self.sampler.second_order else 1)
        self.encoded: tuple[tuple[str, str], ...] = ()
        self.conditioning(run, 0)

    def conditioning(self, run: Run, batch_index: int) -> tuple[list, list]:
        """The second pass's conditioning of one batch (each image's own hires prompts),
        encoded again only when they differ from the batch before's."""
        images = run.batch_prompts(batch_index) or [ImagePrompt.of(run.params)] * run.params.batch_size
        texts = tuple((extract_networks(image.hr_prompt)[0] if image.hr_prompt else extract_networks(image.prompt)[0],
                       image.hr_negative_prompt or image.negative_prompt) for image in images)
        if texts != self.encoded:
            self.conds = encode_lists(run, [p for p, _ in texts], [n for _, n in texts], self.steps)
            self.encoded = texts
        return self.conds

    def after_denoise(self, run: Run, batch: Batch, latents: torch.Tensor, on_step: StepCallback) -> torch.Tensor:
        params, parts = run.params, run.model.components
        factor = parts.config.vae_scale_factor
        if params.hr_upscaler in LATENT_UPSCALERS:
            upscaled = upscale_latents(latents.float(), self.size, factor, params.hr_upscaler)
        else:
            images = upscale_images(decode(run, latents), self.size, params.hr_upscaler, self.model)
            upscaled = torch.cat([encode_image(parts.vae, image, run.policy) for image in images])
        # A1111 draws the second pass's noise from new generators with the same seeds.
        return denoise(run, batch, upscaled, on_step, sampler=self.sampler, sigmas=self.sigmas,
                       start_sigma=self.start_sigma, conds=self.conditioning(run, batch.index), second_pass=True)

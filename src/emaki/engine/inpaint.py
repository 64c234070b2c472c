"""Inpainting: img2img that redraws only what a mask covers (A1111 v1.10's img2img with a mask).

    mask: the `mask` file, or the init image's transparency → inverted? → blurred (x, y)
    whole picture: image and mask fitted to width×height
    only masked:   both cropped to the mask's box + padding, widened to width:height, redrawn at
                   width×height, and pasted back
    masked content: fill (colours from around) | original | latent noise | latent nothing
    after each model call and after sampling:  x0 = x0·m + init·(1 − m)   (m: the mask in latents)
    after decoding: the original laid back over the result, so what is kept stays pixel for pixel

A 9-channel inpainting model also gets the mask and the masked image's latents with every UNet
call (`masked_image_conditioning`); without a mask (txt2img, img2img) the whole image is masked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from emaki.devices import DevicePolicy
from emaki.engine.img2img import (
    Img2Img,
    encode_image,
    encode_pixels,
    fit_image,
    image_pixels,
    plan_img2img_sigmas,
)
from emaki.engine.masking import (
    Box,
    alpha_mask,
    blur_fill,
    blur_mask,
    crop_region,
    overlay_original,
    read_mask,
    widen_to_aspect,
)
from emaki.engine.run import Batch, Extension, Run, StepCallback
from emaki.engine.stages import image_rng
from emaki.errors import ParamsError
from emaki.models.loader import LoadedModel
from emaki.params import INPAINTING_FILLS, GenerationParams

log = logging.getLogger(__name__)

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)  # A1111's `inpainting_fill`


def prepared_mask(params: GenerationParams, size: tuple[int, int]) -> Image.Image | None:
    """The mask at the init image's `size` (255 = repaint): from `mask`, else from the init
    image's transparency (None if it has none); inverted and blurred as the params say."""
    if params.mask:
        mask = read_mask(params.mask, rounded=params.mask_round)
    else:
        assert params.init_image is not None
        found = alpha_mask(params.init_image, rounded=params.mask_round)
        if found is None:
            return None
        mask = found
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.LANCZOS)
    if params.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return blur_mask(mask, params.mask_blur_x, params.mask_blur_y)


def latent_mask(mask: Image.Image, size: tuple[int, int], rounded: bool) -> torch.Tensor:
    """How much each latent pixel is repainted (1×1×h×w, 0..1): the mask resized bicubically to
    `size` (h, w), rounded to 0/1 when `rounded` (A1111's `mask_round`)."""
    small = mask.convert("L").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    values = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)
    return (values.round() if rounded else values)[None, None]


@torch.inference_mode()
def masked_image_conditioning(vae: object, pixels: torch.Tensor, mask: Image.Image | None, weight: float,
                              rounded: bool, policy: DevicePolicy) -> torch.Tensor:
    """What a 9-channel model takes besides the noisy latents (1×5×h×w): the mask at latent size,
    then the latents of the image (`pixels`, the VAE's input) with the masked part faded to grey
    by `weight` (A1111's "conditioning mask strength"; 1 blanks it). No mask: all is masked."""
    if mask is None:
        masked = torch.ones_like(pixels[:, :1])
    else:
        masked = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
        masked = masked.round() if rounded else masked
    latents = encode_pixels(vae, torch.lerp(pixels, pixels * (1.0 - masked), weight), policy)
    return torch.cat([F.interpolate(masked, size=latents.shape[-2:]).to(latents), latents], dim=1)


def _expanded(conditioning: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: conditioning.expand(x.shape[0], -1, -1, -1)


class KeptLatents:
    """A denoiser whose predictions keep the init latents where nothing is repainted (A1111's
    blend after each model call): x0 = x0·m + init·(1 − m). Anything else (the `model_sigmas`
    some samplers read) is the wrapped denoiser's."""

    def __init__(self, denoiser: Callable[..., torch.Tensor], repaint: torch.Tensor, kept: torch.Tensor) -> None:
        self.denoiser, self.repaint, self.kept = denoiser, repaint, kept

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma) * self.repaint + self.kept

    def __getattr__(self, name: str) -> object:
        return getattr(self.denoiser, name)


class Inpaint(Img2Img):
    """img2img that repaints where `mask` (prepared, at the image's size, not empty) says."""

    def __init__(self, image: Image.Image, mask: Image.Image) -> None:
        super().__init__(image)
        self.mask = mask
        self.paste_box: Box | None = None  # only masked: where the result goes back
        self.original = image  # what the result is laid over, and how opaque (255: kept as is)
        self.opacity = mask
        self.repaint = torch.ones(1)  # 1×1×h×w latent mask
        self.kept = torch.zeros(1)  # the init latents where they are kept

    def plan(self, run: Run) -> None:
        params, parts, policy = run.params, run.model.components, run.policy
        plan_img2img_sigmas(run)
        image, mask = self._area(params)
        if params.inpainting_fill == FILL:
            image = blur_fill(image, mask)
        self.fitted = image
        latent = encode_image(parts.vae, image, policy)
        self.repaint = latent_mask(mask, (latent.shape[-2], latent.shape[-1]), params.mask_round).to(latent)
        self.kept = latent * (1.0 - self.repaint)
        self.latent = self.kept if params.inpainting_fill == LATENT_NOTHING else latent
        if parts.config.is_inpainting:
            conditioning = masked_image_conditioning(parts.vae, image_pixels(image), mask,
                                                     params.inpainting_mask_weight, params.mask_round, policy)
            run.denoiser.image_conditioning = _expanded(conditioning)

    def _area(self, params: GenerationParams) -> tuple[Image.Image, Image.Image]:
        """The image and mask to redraw at width×height; sets what the result is laid over."""
        assert params.width is not None and params.height is not None
        width, height = params.width, params.height
        if params.inpaint_full_res:
            box = crop_region(self.mask, params.inpaint_full_res_padding)
            assert box is not None  # an empty mask is img2img (`image_extensions`)
            self.paste_box = widen_to_aspect(box, width, height, self.mask.size)
            self.original, self.opacity = self.image, ImageOps.invert(self.mask)
            return (fit_image(self.image.crop(self.paste_box), width, height, "resize and fill"),
                    fit_image(self.mask.crop(self.paste_box), width, height, "resize and fill"))
        image = fit_image(self.image, width, height, params.resize_mode)
        mask = fit_image(self.mask, width, height, params.resize_mode)
        # A1111 lays the original over at twice the mask's strength: the blur's outer half stays original.
        self.original, self.opacity = image, ImageOps.invert(mask.point(lambda v: min(255, 2 * v)))
        return image, mask

    def initial_latents(self, run: Run, batch: Batch) -> torch.Tensor | None:
        start = super().initial_latents(run, batch)
        assert start is not None
        if run.params.inpainting_fill != LATENT_NOISE:
            return start
        noise = image_rng(run.params, tuple(start.shape[1:]), batch).first().to(start)
        return start * (1.0 - self.repaint) + noise * self.repaint

    def wrap_denoiser(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return KeptLatents(denoiser, self.repaint, self.kept)

    def after_denoise(self, run: Run, batch: Batch, latents: torch.Tensor, on_step: StepCallback) -> torch.Tensor:
        return latents * self.repaint + self.kept

    def after_decode(self, run: Run, batch: Batch, images: list[Image.Image]) -> list[Image.Image]:
        return [overlay_original(self._pasted(image), self.original, self.opacity) for image in images]

    def _pasted(self, image: Image.Image) -> Image.Image:
        if self.paste_box is None:
            return image
        x0, y0, x1, y1 = self.paste_box
        canvas = Image.new("RGB", self.original.size)
        canvas.paste(fit_image(image, x1 - x0, y1 - y0, "crop and resize"), (x0, y0))
        return canvas

    def infotext_fields(self, run: Run) -> dict[str, object]:
        """What A1111 records of an inpainting run (its web UI's defaults are left out)."""
        params = run.params
        blur = params.mask_blur_x if params.mask_blur_x == params.mask_blur_y else None
        fields: dict[str, object] = {
            "Mask blur": blur or None,
            "Mask mode": "Inpaint not masked" if params.inpainting_mask_invert else None,
            "Inpaint area": "Only masked" if params.inpaint_full_res else None,
            "Masked area padding": params.inpaint_full_res_padding if params.inpaint_full_res else None,
            "Masked content": None if params.inpainting_fill == ORIGINAL else INPAINTING_FILLS[params.inpainting_fill],
        }
        if run.model.components.config.is_inpainting:
            fields["Conditional mask weight"] = float(params.inpainting_mask_weight)
        return {k: v for k, v in fields.items() if v is not None} | super().infotext_fields(run)


class BlankImageConditioning(Extension):
    """A 9-channel model with nothing to repaint (txt2img, img2img): the whole image is masked,
    as A1111 does — a mid-grey image for txt2img and the hires pass, the img2img image faded by
    the conditioning mask strength. Made for each latent size as the passes ask for it."""

    def __init__(self, img2img: Img2Img | None) -> None:
        self.img2img = img2img
        self.made: dict[tuple[int, int], torch.Tensor] = {}  # by pixel size

    def plan(self, run: Run) -> None:
        parts, weight, policy = run.model.components, run.params.inpainting_mask_weight, run.policy
        factor = parts.config.vae_scale_factor

        def conditioning(x: torch.Tensor) -> torch.Tensor:
            height, width = x.shape[-2] * factor, x.shape[-1] * factor
            if (height, width) not in self.made:
                source = self.img2img.fitted if self.img2img is not None else None
                if source is not None and source.size == (width, height):
                    made = masked_image_conditioning(parts.vae, image_pixels(source), None, weight, True, policy)
                else:  # mid-grey, 0 in the VAE's [-1, 1]: what any image faded all the way gives
                    made = masked_image_conditioning(parts.vae, torch.zeros(1, 3, height, width), None, 1.0, True,
                                                     policy)
                self.made[height, width] = made
            return self.made[height, width].expand(x.shape[0], -1, -1, -1)

        run.denoiser.image_conditioning = conditioning

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return {"Conditional mask weight": float(run.params.inpainting_mask_weight)}


def image_extensions(params: GenerationParams, init: Image.Image | None, model: LoadedModel) -> list[Extension]:
    """What the init image and mask make of a run: nothing (txt2img), `Img2Img` or `Inpaint`;
    plus the blank image conditioning a 9-channel model needs when there is no mask."""
    inpainting_model = model.components.config.is_inpainting
    if init is None:
        if params.mask:
            raise ParamsError("mask: inpainting repaints an init_image; give one")
        return [BlankImageConditioning(None)] if inpainting_model else []
    mask = prepared_mask(params, init.size)
    if mask is not None and mask.getbbox() is not None:
        return [Inpaint(init, mask)]
    if mask is not None:
        log.warning("mask: it marks nothing to repaint; running img2img on the whole image instead")
    img2img = Img2Img(init)
    return [img2img, BlankImageConditioning(img2img)] if inpainting_model else [img2img]

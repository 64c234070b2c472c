"""The request bodies of A1111's API (v1.10.1 `StableDiffusionProcessing*` shapes), mapped to
`GenerationParams` fields; the routes are in `a1111.py`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams
from emaki.prompts import extract_networks

# Fields whose A1111 spelling or default needs translating (see `generation_fields`).
_SPELLED_DIFFERENTLY = frozenset({"seed_resize_from_w", "seed_resize_from_h", "sampler_name", "scheduler",
                                  "denoising_strength", "hr_upscaler", "hr_sampler_name"})


class Txt2ImgRequest(BaseModel):
    """`StableDiffusionProcessingTxt2Img` as the A1111 API accepts it; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None

    def unsupported(self) -> list[str]:
        """Fields asking for something emaki cannot do yet: refused rather than ignored."""
        asked = {
            "hr_checkpoint_name": self.hr_checkpoint_name not in (None, "", "Use same checkpoint"),
            "hr_scheduler": self.hr_scheduler not in (None, "", "Use same scheduler"),
            "firstphase_width/height": bool(self.firstphase_width or self.firstphase_height),
            "restore_faces": bool(self.restore_faces), "tiling": bool(self.tiling),
            "script_name": bool(self.script_name), "alwayson_scripts": bool(self.alwayson_scripts),
            "refiner_checkpoint": bool(self.refiner_checkpoint), "styles": bool(self.styles),
            "s_churn": bool(self.s_churn), "s_min_uncond": bool(self.s_min_uncond),
        }
        return [name for name, on in asked.items() if on]

    def generation_fields(self) -> dict[str, Any]:
        """`GenerationParams` fields: those of `infotext` first (A1111's `infotext` field), then
        the ones this request set explicitly."""
        fields: dict[str, Any] = {}
        if self.infotext:
            fields = decode_infotext(self.infotext).model_dump(exclude_defaults=True)
            fields.pop("model", None)  # a model named in an infotext is chosen through the settings
        explicit = self.model_fields_set
        # Fields spelled alike in both schemas pass as they are (a new `GenerationParams` field
        # that A1111 also has needs nothing here); the hires group only with `enable_hr`.
        shared = (GenerationParams.model_fields.keys() & Txt2ImgRequest.model_fields.keys()) - _SPELLED_DIFFERENTLY
        mine = {name: getattr(self, name) for name in shared if not name.startswith(("hr_", "enable_hr"))}
        mine |= {"seed_resize_from_w": max(self.seed_resize_from_w, 0),
                 "seed_resize_from_h": max(self.seed_resize_from_h, 0),
                 "sampler_name": self.sampler_name or self.sampler_index}
        if self.enable_hr:
            mine |= {name: getattr(self, name) for name in shared if name.startswith("hr_")}
            mine |= {"enable_hr": True, "hr_upscaler": self.hr_upscaler or "Latent",
                     "hr_sampler_name": None if self.hr_sampler_name in ("", "Use same sampler") else self.hr_sampler_name,
                     "denoising_strength": 0.75 if self.denoising_strength is None else self.denoising_strength}
        if self.scheduler is not None:
            mine["scheduler"] = self.scheduler
        aliases = {"sampler_name": ("sampler_name", "sampler_index"),
                   "seed_resize_from_w": ("seed_resize_from_w",), "seed_resize_from_h": ("seed_resize_from_h",)}
        for key, value in mine.items():
            if not self.infotext or explicit & set(aliases.get(key, (key,))):
                fields[key] = value
        if self.disable_extra_networks:
            fields["prompt"] = extract_networks(fields.get("prompt", ""))[0]
        return fields


class Img2ImgRequest(Txt2ImgRequest):
    """`StableDiffusionProcessingImg2Img` as the API accepts it (inpainting fields are refused)."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur: int | None = None
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False

    def unsupported(self) -> list[str]:
        asked = {"mask": bool(self.mask), "latent_mask": bool(self.latent_mask),
                 "resize_mode": self.resize_mode not in RESIZE_MODES,
                 "initial_noise_multiplier": self.initial_noise_multiplier not in (None, 1, 1.0),
                 "init_images (more than one)": len(self.init_images or []) > 1}
        return super().unsupported() + [name for name, on in asked.items() if on]

    def generation_fields(self) -> dict[str, Any]:
        fields = super().generation_fields()
        fields["denoising_strength"] = 0.75 if self.denoising_strength is None else self.denoising_strength
        fields["resize_mode"] = RESIZE_MODES.get(self.resize_mode, "just resize")
        return fields


RESIZE_MODES = {0: "just resize", 1: "crop and resize", 2: "resize and fill"}


class PngInfoRequest(BaseModel):
    image: str = ""

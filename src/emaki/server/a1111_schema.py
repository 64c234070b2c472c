"""The request bodies of A1111's API (v1.10.1 `StableDiffusionProcessing*` shapes and the
training routes' arguments), mapped to `GenerationParams` and `TrainingParams` fields; the routes
are in `a1111.py`."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from emaki.errors import ParamsError
from emaki.infotext_codec import decode_infotext
from emaki.params import MAX_PROMPT_LENGTH, CheckedModel, GenerationParams
from emaki.prompts import extract_networks
from emaki.server.xyz_script import XYZ_PLOT
from emaki.training.params import parse_number_list

# Fields whose A1111 spelling or default needs translating (see `generation_fields`).
_SPELLED_DIFFERENTLY = frozenset({"seed_resize_from_w", "seed_resize_from_h", "sampler_name", "scheduler",
                                  "denoising_strength", "hr_upscaler", "hr_sampler_name"})


class Txt2ImgRequest(CheckedModel):
    """`StableDiffusionProcessingTxt2Img` as the A1111 API accepts it; unknown fields are ignored.
    Numbers are checked by the `GenerationParams` fields they fill (floats must be finite here
    already: the request is echoed back in `parameters`)."""

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
    token_merging_ratio: float = 0.0  # 0: the `token_merging_ratio` setting's (A1111's `ratio or opts.ratio`)
    token_merging_ratio_hr: float = 0.0  # 0: the `token_merging_ratio_hr` setting's, then the ratio above
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
    infotext: str | None = Field(None, max_length=4 * MAX_PROMPT_LENGTH)  # its prompts, and the settings line

    def unsupported(self) -> list[str]:
        """Fields asking for something emaki cannot do yet: refused rather than ignored."""
        asked = {
            "hr_checkpoint_name": self.hr_checkpoint_name not in (None, "", "Use same checkpoint"),
            "hr_scheduler": self.hr_scheduler not in (None, "", "Use same scheduler"),
            "firstphase_width/height": bool(self.firstphase_width or self.firstphase_height),
            "script_name": bool(self.script_name) and not self.xyz_plot(),
            "refiner_checkpoint": bool(self.refiner_checkpoint),
            "s_churn": bool(self.s_churn),
        }
        return [name for name, on in asked.items() if on] + [
            f"alwayson_scripts: {name!r} (emaki has no such script)" for name in self.alwayson_asked()]

    def xyz_plot(self) -> bool:
        """Whether the request runs A1111's "X/Y/Z plot" script (titles match ignoring case)."""
        return (self.script_name or "").strip().lower() == XYZ_PLOT

    def alwayson_asked(self) -> list[str]:
        """The `alwayson_scripts` entries that ask for something: clients send `{}` or
        `{"args": []}` for scripts they leave off, and those ask for nothing."""
        return [name for name, entry in self.alwayson_scripts.items()
                if entry and not (isinstance(entry, dict) and set(entry) <= {"args"} and not entry.get("args"))]

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
                 "sampler_name": self.sampler_name or self.sampler_index,
                 "tiling": bool(self.tiling), "restore_faces": bool(self.restore_faces)}  # clients send null for off
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
        for ratio in ("token_merging_ratio", "token_merging_ratio_hr"):
            if not fields.get(ratio):  # the settings' (or override_settings') ratio
                fields.pop(ratio, None)
        if fields.get("s_min_uncond") is None:  # the settings' NGMS (A1111: `s_min_uncond or opts.s_min_uncond`)
            fields.pop("s_min_uncond", None)
        return fields


class Img2ImgRequest(Txt2ImgRequest):
    """`StableDiffusionProcessingImg2Img` as the API accepts it: with `mask`, inpainting (the
    defaults are A1111's API's, not its web UI's); `script_name: "SD upscale"` runs that script."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False

    def sd_upscale(self) -> bool:
        """Whether the request runs A1111's "SD upscale" script (A1111 matches titles ignoring case)."""
        return (self.script_name or "").lower() == SD_UPSCALE

    def unsupported(self) -> list[str]:
        asked = {"latent_mask": bool(self.latent_mask),
                 "resize_mode": self.resize_mode not in RESIZE_MODES,
                 "init_images (more than one)": len(self.init_images or []) > 1}
        inherited = [name for name in super().unsupported() if not (name == "script_name" and self.sd_upscale())]
        return inherited + [name for name, on in asked.items() if on]

    def generation_fields(self) -> dict[str, Any]:
        fields = super().generation_fields()
        fields["denoising_strength"] = 0.75 if self.denoising_strength is None else self.denoising_strength
        fields["resize_mode"] = RESIZE_MODES.get(self.resize_mode, "just resize")
        if self.initial_noise_multiplier is not None:
            fields["initial_noise_multiplier"] = self.initial_noise_multiplier
        if self.mask:  # the image itself is decoded by the route
            blur_x, blur_y = (self.mask_blur, self.mask_blur) if self.mask_blur is not None else (
                self.mask_blur_x, self.mask_blur_y)
            fields |= {"mask_blur_x": blur_x, "mask_blur_y": blur_y, "mask_round": self.mask_round,
                       "inpainting_fill": self.inpainting_fill, "inpaint_full_res": self.inpaint_full_res,
                       "inpaint_full_res_padding": self.inpaint_full_res_padding,
                       "inpainting_mask_invert": self.inpainting_mask_invert}
        return fields

    def sd_upscale_args(self) -> tuple[int, int | str, float]:
        """The script's (overlap, upscaler index or name, scale factor) from A1111's positional
        `script_args` `[info, overlap, upscaler_index, scale_factor]`; A1111's slider defaults for
        the ones left out."""
        args = list(self.script_args) + [None] * 4
        overlap, upscaler, scale = args[1], args[2], args[3]
        try:
            overlap = 64 if overlap is None else int(overlap)
            scale = 2.0 if scale is None else float(scale)
        except (TypeError, ValueError):
            raise ParamsError("script_args: expected [_, overlap, upscaler_index, scale_factor] "
                              f"with numbers, got {self.script_args!r:.120}") from None
        if upscaler is None:
            upscaler = 0
        if not isinstance(upscaler, (int, str)) or isinstance(upscaler, bool):
            raise ParamsError(f"script_args: the upscaler is an index into /sdapi/v1/upscalers or a name, "
                              f"got {upscaler!r:.60}")
        return overlap, upscaler, scale


SD_UPSCALE = "sd upscale"
RESIZE_MODES = {0: "just resize", 1: "crop and resize", 2: "resize and fill"}


class ExtrasRequest(CheckedModel):
    """A1111's `ExtrasBaseRequest`: upscaler 1, then upscaler 2 blended in at its visibility;
    `resize_mode` 0 scales by `upscaling_resize`, 1 to `upscaling_resize_w`×`_h` (cropped to it
    with `upscaling_crop`). `gfpgan_visibility` restores faces (emaki.faces); CodeFormer is refused."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: int = Field(0, ge=0, le=1)
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0)
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0)
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0)
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0)
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasRequest):
    image: str = ""


class FileData(CheckedModel):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasRequest):
    imageList: list[FileData] = Field(default_factory=list)  # A1111 spells it so


class PngInfoRequest(CheckedModel):
    image: str = ""


# --- training (A1111 v1.10 `modules/api/api.py`: create_embedding, create_hypernetwork,
# train_embedding, train_hypernetwork; their bodies are the keyword arguments of the functions
# behind A1111's Train tab) ---


def number_list(value: list[float] | str | None, field: str) -> list[float] | None:
    """A list as sent, or A1111's text form "1, 2, 1"."""
    if value is None or isinstance(value, list):
        return value
    return parse_number_list(value, field)


class CreateEmbeddingRequest(CheckedModel):
    """`create_embedding(name, num_vectors_per_token, overwrite_old, init_text)`."""

    model_config = ConfigDict(extra="ignore")

    name: str
    num_vectors_per_token: int = 1
    overwrite_old: bool = False
    init_text: str = "*"


class CreateHypernetworkRequest(CheckedModel):
    """`create_hypernetwork(name, enable_sizes, overwrite_old, layer_structure, activation_func,
    weight_init, add_layer_norm, use_dropout, dropout_structure)`."""

    model_config = ConfigDict(extra="ignore")

    name: str
    enable_sizes: list[int] | None = None  # A1111 sends ["768", "320", "640", "1280"]; None: the model's
    overwrite_old: bool = False
    layer_structure: list[float] | str | None = None
    activation_func: str | None = None
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: list[float] | str | None = None

    def hypernetwork_options(self) -> dict[str, Any]:
        """Keyword arguments of `Engine.create_hypernetwork`; the dropout structure counts only
        with `use_dropout`, as in A1111."""
        return {
            "sizes": self.enable_sizes,
            "layer_structure": number_list(self.layer_structure, "layer_structure"),
            "activation_func": self.activation_func or "linear",
            "weight_initialization": self.weight_init,
            "add_layer_norm": self.add_layer_norm,
            "dropout_structure": number_list(self.dropout_structure, "dropout_structure") if self.use_dropout else None,
            "overwrite": self.overwrite_old,
        }


class TrainRequest(CheckedModel):
    """The fields `train_embedding` and `train_hypernetwork` share. A1111's other fields
    (`id_task`, `preview_negative_prompt`, `preview_sampler_name`, `preview_cfg_scale`,
    `preview_width`, `preview_height`, `save_image_with_stored_embedding`) are accepted and
    ignored: previews are drawn at the training size with the trainer's sampler."""

    model_config = ConfigDict(extra="ignore")

    learn_rate: str | float | None = None  # None: the kind's default
    batch_size: int = 1
    gradient_step: int = 1
    data_root: str
    log_directory: str | None = None
    training_width: int | None = None  # None: the model's native size
    training_height: int | None = None
    varsize: bool = False
    steps: int
    clip_grad_mode: str | bool | None = "disabled"
    clip_grad_value: str | float = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    use_weight: bool = False
    create_image_every: int = 500
    template_filename: str | None = None
    preview_from_txt2img: bool | None = None  # False: preview with the first caption, as A1111
    preview_prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    preview_seed: int = -1  # -1: a random seed
    preview_steps: int = 20

    # How the fields named differently from `TrainingParams` are named here, for messages.
    RENAMED: ClassVar[dict[str, str]] = {
        "data": "data_root", "width": "training_width", "height": "training_height",
        "preview_every": "create_image_every", "template": "template_filename",
    }

    def shared_fields(self, kind: str, name: str) -> dict[str, Any]:
        """`TrainingParams` fields; the run's logs go to `<log_directory>/<kind>s/<name>` (A1111:
        `<log_directory>/<date>/<name>`), so that each network resumes from its own state."""
        fields: dict[str, Any] = {
            "kind": kind, "name": name,
            "learn_rate": None if self.learn_rate is None else str(self.learn_rate),
            "batch_size": self.batch_size, "gradient_step": self.gradient_step, "data": self.data_root,
            "log_directory": f"{self.log_directory}/{kind}s/{name}" if self.log_directory else None,
            "width": self.training_width, "height": self.training_height, "varsize": self.varsize,
            "steps": self.steps,
            "clip_grad_mode": "disabled" if self.clip_grad_mode in (False, None, "", "disabled") else self.clip_grad_mode,
            "clip_grad_value": str(self.clip_grad_value), "shuffle_tags": self.shuffle_tags,
            "tag_drop_out": self.tag_drop_out, "latent_sampling_method": self.latent_sampling_method,
            "use_weight": self.use_weight, "preview_every": self.create_image_every,
            "template": self.template_filename or None,
        }
        if self.preview_from_txt2img is not False:
            seed = self.preview_seed if self.preview_seed >= 0 else random.randrange(2**32)
            fields |= {"preview_prompt": self.preview_prompt, "preview_seed": seed, "preview_steps": self.preview_steps}
        return fields


class TrainEmbeddingRequest(TrainRequest):
    """`train_embedding(...)`: trains the named embedding on from its stored step."""

    embedding_name: str
    save_embedding_every: int = 500

    RENAMED: ClassVar[dict[str, str]] = TrainRequest.RENAMED | {"name": "embedding_name",
                                                                  "save_every": "save_embedding_every"}

    def training_fields(self) -> dict[str, Any]:
        return {"save_every": self.save_embedding_every, **self.shared_fields("embedding", self.embedding_name)}


class TrainHypernetworkRequest(TrainRequest):
    """`train_hypernetwork(...)`: trains the named hypernetwork on from its stored step."""

    hypernetwork_name: str
    save_hypernetwork_every: int = 500

    RENAMED: ClassVar[dict[str, str]] = TrainRequest.RENAMED | {"name": "hypernetwork_name",
                                                                  "save_every": "save_hypernetwork_every"}

    def training_fields(self) -> dict[str, Any]:
        return {"save_every": self.save_hypernetwork_every,
                **self.shared_fields("hypernetwork", self.hypernetwork_name)}

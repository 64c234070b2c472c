"""`GenerationParams`: the one object that flows from CLI/API through the engine into infotext.

Field names follow the A1111 API payload (`/sdapi/v1/txt2img`) where one exists. Every field is
bounded: numbers by range (floats finite), prompts by length, so no surface (CLI, Python, HTTP)
can ask for unbounded work or memory, or store a NaN that JSON cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from emaki.errors import ParamsError

MAX_SEED = 2**32 - 1
MAX_SIDE = 4096  # pixels, for every size field (the server allows less area: see `server.service`)
# A prompt is encoded in 75-token chunks, each one text-encoder pass per step-schedule variant;
# 32 k characters is some 100 chunks, far beyond any real prompt (A1111 sets no limit).
MAX_PROMPT_LENGTH = 32_768
MAX_INPUT_PIXELS = 4096 * 4096  # an input image (img2img, masks) may be this large once decoded
# A1111's `inpainting_fill` values 0-3, by the names its web UI and infotext use.
INPAINTING_FILLS = ("fill", "original", "latent noise", "latent nothing")
Model = TypeVar("Model", bound=BaseModel)


class CheckedModel(BaseModel):
    """A request or parameter model: floats must be finite (NaN and infinities are refused), and
    a refusal quotes what it refused in a form JSON can carry back (FastAPI's 422 echoes each bad
    input, and an echoed NaN, or a 1 MB prompt, would make the answer a 500 or a flood)."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _quotable_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as e:
            details: list[InitErrorDetails] = []
            for item in e.errors(include_url=False):
                detail: InitErrorDetails = {"type": item["type"], "loc": item["loc"], "input": quotable(item["input"])}
                if "ctx" in item:
                    detail["ctx"] = item["ctx"]
                details.append(detail)
            raise ValidationError.from_exception_data(e.title, details) from None


def quotable(value: Any, limit: int = 60) -> Any:
    """`value` as an error may quote it: non-finite floats as text ("nan"), long strings cut
    (with their length), huge integers by their size; containers item by item. Quoting a quoted
    value changes nothing (a cut string is shorter than `limit` + 40)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > limit + 40:
        return f"{value[:limit]}... ({len(value):,} characters)"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length():,} bits"
    if isinstance(value, dict):
        return {key: quotable(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [quotable(item, limit) for item in value]
    return value


class GenerationParams(CheckedModel):
    """Everything needed to make (and remake) an image."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    styles: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64, description="styles (styles.csv names) applied to the prompts, in order")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 draws a random seed")
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_w: int = Field(0, ge=0, le=MAX_SIDE, description="the noise is drawn at this size (0: width)")
    seed_resize_from_h: int = Field(0, ge=0, le=MAX_SIDE)
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = Field(20, ge=1, le=1000)
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
    width: int | None = Field(None, ge=8, le=MAX_SIDE, description="None: the model's native size")
    height: int | None = Field(None, ge=8, le=MAX_SIDE)
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    clip_skip: int = Field(1, ge=1, le=12)
    tiling: bool = Field(False, description="seamless tiling: circular padding in the UNet's and VAE's convolutions")
    restore_faces: bool = Field(False, description="A1111's face restoration: GFPGAN on every face found after "
                                "decoding (needs GFPGANv1.4.pth and detection_Resnet50_Final.pth; emaki.faces)")
    eta: float | None = None
    s_noise: float | None = None
    # Speed (docs/performance.md): approximations, each off by default and recorded in infotext.
    s_min_uncond: float = Field(0.0, ge=0.0, le=100.0, description="NGMS, A1111's Negative Guidance minimum "
                                "sigma: below it the negative prompt is skipped every other step (0: off)")
    s_min_uncond_all: bool = Field(False, description="NGMS skips the negative prompt on every step below it")
    cache_interval: int = Field(0, ge=0, le=1000, description="DeepCache: the whole UNet every N steps, its deep "
                                "features reused in between (0, 1: off)")
    gate_step: int = Field(0, ge=0, le=1000, description="T-GATE: from this step on, cross-attention is reused "
                           "and the negative prompt dropped (0: off)")
    token_merging_ratio: float = Field(0.0, ge=0.0, le=0.9, description="ToMe, A1111's token merging ratio: the "
                                       "share of tokens merged before self-attention at full resolution (0: off)")
    token_merging_ratio_hr: float = Field(0.0, ge=0.0, le=0.9, description="A1111's token merging ratio of the hires "
                                          "fix's second pass (0: token_merging_ratio's)")
    eta_noise_seed_delta: int = Field(0, ge=0, le=MAX_SEED, description="added to the seed of the noise after the first")
    rng: Literal["CPU", "GPU", "NV"] = "CPU"
    prompt_dialect: Literal["a1111", "novelai"] = "a1111"
    emphasis: Literal["Original", "No norm", "Ignore", "None"] = "Original"
    model: str | None = Field(None, description="checkpoint file, diffusers folder or hub id")
    vae: str | None = None
    hypernetwork: str | None = Field(None, description="hypernetwork file stem, applied to every prompt")
    hypernetwork_strength: float = Field(1.0, description="strength of `hypernetwork`")
    init_image: str | None = Field(None, description="img2img: the image to start from (a file path)")
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0, description="img2img: how much is redrawn (1: all)")
    resize_mode: Literal["just resize", "crop and resize", "resize and fill"] = Field(
        "just resize", description="img2img: how the image is fitted to width x height (A1111's modes 0-2)")
    enable_hr: bool = Field(False, description="hires fix: a second, img2img pass at a larger size")
    hr_scale: float = Field(2.0, gt=0, le=8)
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE, description="hires width (0: width x hr_scale)")
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE)
    hr_upscaler: str = Field("Latent", description="Latent, Latent (nearest-exact), ..., Lanczos, Nearest, None")
    hr_second_pass_steps: int = Field(0, ge=0, le=1000, description="0: as many as `steps`")
    hr_sampler_name: str | None = None
    hr_prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT_LENGTH)
    # Inpainting (with init_image): A1111's img2img fields; the defaults are its web UI's.
    mask: str | None = Field(None, description="inpainting: the mask image (a file path; white = repaint). "
                             "Without one, an init_image with transparency is repainted where transparent")
    mask_blur: int | None = Field(None, ge=0, le=64, description="sets mask_blur_x and mask_blur_y")
    mask_blur_x: int = Field(4, ge=0, le=64, description="inpainting: Gaussian blur of the mask, in pixels")
    mask_blur_y: int = Field(4, ge=0, le=64)
    mask_round: bool = Field(True, description="inpainting: round the latent mask to 0/1")
    inpainting_fill: int = Field(1, ge=0, le=3, description="masked content: 0 fill, 1 original, 2 latent noise, "
                                 "3 latent nothing")
    inpaint_full_res: bool = Field(False, description="inpaint area: only the masked part, redrawn at width x "
                                   "height and pasted back (False: the whole picture)")
    inpaint_full_res_padding: int = Field(32, ge=0, le=256, description="only masked: pixels around the mask")
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1: repaint what the mask leaves out")
    initial_noise_multiplier: float = Field(1.0, ge=0.0, le=1.5, description="img2img: scales the initial noise")
    inpainting_mask_weight: float = Field(1.0, ge=0.0, le=1.0, description="9-channel inpainting models: "
                                          "conditioning mask strength")

    @field_validator("styles", mode="before")
    @classmethod
    def _no_styles(cls, value: Any) -> Any:
        return [] if value is None else value  # A1111's API sends `styles: null` for none

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        return multiple_of_8(value)

    @field_validator("s_min_uncond", mode="before")
    @classmethod
    def _unset_ngms_is_off(cls, value: Any) -> Any:
        """`s_min_uncond: null` (what A1111's clients send for "the setting's") is 0, off, where no
        setting fills it first (the A1111 routes leave null out, so the server's setting applies)."""
        return 0.0 if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _mask_blur_sets_both(cls, data: Any) -> Any:
        """A1111's `mask_blur` sets `mask_blur_x` and `mask_blur_y`; kept as those two only, so
        equal params compare equal (an out-of-range value stays for its field to report)."""
        blur = data.get("mask_blur") if isinstance(data, dict) else None
        if isinstance(blur, int) and not isinstance(blur, bool) and 0 <= blur <= 64:
            return {**data, "mask_blur_x": blur, "mask_blur_y": blur, "mask_blur": None}
        return data

    @classmethod
    def create(cls, **fields: Any) -> GenerationParams:
        """Validate `fields`; a bad one raises `ParamsError` naming it and what was expected."""
        return checked(cls, fields)

    def updated(self, **fields: Any) -> GenerationParams:
        return GenerationParams.create(**(self.model_dump() | fields))


def multiple_of_8(value: int | None) -> int | None:
    """A size field's rule (latents are an eighth of the pixels): None, or a multiple of 8."""
    if value is not None and value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


def checked(model: type[Model], fields: dict[str, Any]) -> Model:
    """`model(**fields)`, a bad field raising `ParamsError` naming it and what was expected."""
    try:
        return model(**fields)
    except ValidationError as e:
        raise params_error(e) from None


def params_error(error: ValidationError) -> ParamsError:
    problems = []
    for item in error.errors():
        if not item["loc"]:  # a rule over several fields: its message names them
            problems.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in item["loc"])
        problems.append(f"{field}: {item['msg']} (got {quotable(item.get('input'))!r})")
    return ParamsError("invalid parameter " + "; ".join(problems))


class ImageTooLarge(ParamsError):
    """An input image decodes to more pixels than allowed (HTTP 413): refused from its header."""


def check_input_size(width: int, height: int, field: str) -> None:
    """An input image's declared size, before its pixels are decoded: at most `MAX_INPUT_PIXELS`
    (a few hundred KB of PNG can declare gigabytes of pixels)."""
    if width * height > MAX_INPUT_PIXELS:
        raise ImageTooLarge(f"{field}: the image is {width}x{height} pixels, more than the {MAX_INPUT_PIXELS:,} "
                            f"(4096x4096) an input image may have")


SPEEDS = ("exact", "fast")


def speed_preset(name: str, steps: int) -> dict[str, Any]:
    """The fields `--speed NAME` sets for a run of `steps` steps: `exact` turns every
    approximation off; `fast` turns on those that kept the demo model's attribute accuracy within
    2 points of the exact path — NGMS on every step below sigma 4, T-GATE from half the steps and
    token merging at 0.5 (in a hires fix's second pass too: its own ratio, 0, falls back to
    that); not DeepCache, which lost 3-5 points (docs/performance.md has the measurements).

    >>> speed_preset("fast", 20)
    {'s_min_uncond': 4.0, 's_min_uncond_all': True, 'cache_interval': 0, 'gate_step': 10, 'token_merging_ratio': 0.5, 'token_merging_ratio_hr': 0.0}
    """
    if name not in SPEEDS:
        raise ParamsError(f"speed: expected {' or '.join(SPEEDS)}, got {name!r}")
    if name == "exact":
        return {"s_min_uncond": 0.0, "s_min_uncond_all": False, "cache_interval": 0, "gate_step": 0,
                "token_merging_ratio": 0.0, "token_merging_ratio_hr": 0.0}
    return {"s_min_uncond": 4.0, "s_min_uncond_all": True, "cache_interval": 0, "gate_step": max(1, round(steps / 2)),
            "token_merging_ratio": 0.5, "token_merging_ratio_hr": 0.0}


def expand_speed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as a request or a batch line sends them, with `speed` (a preset's name, as
    `--speed`), if there, replaced by the preset's fields that the others do not set.

    >>> expand_speed({"speed": "fast", "steps": 8, "token_merging_ratio": 0})["gate_step"]
    4
    """
    values = dict(fields)
    speed = values.pop("speed", None)
    return values | speed_preset_under(speed, values.get("steps"), values)


def speed_preset_under(name: str | None, steps: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the preset `name` (none when `name` is None) that `given` does not set
    (None counts as not set): the options a user names win over the preset, as `--speed fast
    --token-merging 0` keeps the rest of the preset without token merging. `steps` that are not
    a positive whole number (checked later, with the other fields) count as the default's."""
    if name is None:
        return {}
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        steps = GenerationParams.model_fields["steps"].default
    return {field: value for field, value in speed_preset(name, steps).items() if given.get(field) is None}

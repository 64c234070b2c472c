"""`GenerationParams`: the one object that flows from CLI/API through the engine into infotext.

Field names follow the A1111 API payload (`/sdapi/v1/txt2img`) where one exists.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emaki.errors import ParamsError

MAX_SEED = 2**32 - 1
Model = TypeVar("Model", bound=BaseModel)


class GenerationParams(BaseModel):
    """Everything needed to make (and remake) an image."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 draws a random seed")
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_w: int = Field(0, ge=0)
    seed_resize_from_h: int = Field(0, ge=0)
    sampler_name: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = Field(20, ge=1, le=1000)
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
    width: int | None = Field(None, ge=8, le=4096, description="None: the model's native size")
    height: int | None = Field(None, ge=8, le=4096)
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    clip_skip: int = Field(1, ge=1, le=12)
    eta: float | None = None
    s_noise: float | None = None
    eta_noise_seed_delta: int = Field(0, ge=0)
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
    hr_resize_x: int = Field(0, ge=0, le=4096, description="hires width (0: width x hr_scale)")
    hr_resize_y: int = Field(0, ge=0, le=4096)
    hr_upscaler: str = Field("Latent", description="Latent, Latent (nearest-exact), ..., Lanczos, Nearest, None")
    hr_second_pass_steps: int = Field(0, ge=0, le=1000, description="0: as many as `steps`")
    hr_sampler_name: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        return multiple_of_8(value)

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
        problems.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return ParamsError("invalid parameter " + "; ".join(problems))

"""`TrainingParams`: one training run of an embedding or a hypernetwork, as every surface states it.

Field names follow A1111's training form where it has one (`learn_rate`, `batch_size`,
`clip_grad_mode`...); the CLI flags are the same names with dashes. `None` means "the default for
this kind on this model" (see `resolved_learn_rate`, and the trainers for sizes and templates).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emaki.errors import ParamsError
from emaki.params import checked, multiple_of_8
from emaki.training.buckets import check_buckets
from emaki.training.schedules import parse_lr_schedule

TrainingKind = Literal["embedding", "hypernetwork", "lora"]
DEFAULT_LEARN_RATES = {"embedding": "0.005", "hypernetwork": "0.00001", "lora": "0.0001"}
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear")
# What an option left open (None) becomes: A1111's defaults, for SD 1.x checkpoints ...
A1111_DEFAULTS: dict[str, dict[str, Any]] = {
    "embedding": {"learn_rate": DEFAULT_LEARN_RATES["embedding"]},
    "hypernetwork": {"learn_rate": DEFAULT_LEARN_RATES["hypernetwork"], "activation_func": "linear",
                     "weight_initialization": "Normal"},
    "lora": {"learn_rate": DEFAULT_LEARN_RATES["lora"], "lr_scheduler": "constant"},  # kohya's; unet/te rates follow it
}
# ... and on the bundled demo model (a 3M-parameter UNet, a 128-wide text encoder), whose
# hypernetworks learn within a few hundred steps only at a larger rate and with a non-linear MLP
# (measured with benchmarks/train.py; the note of the training issue has the numbers).
DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "hypernetwork": {"learn_rate": "0.0005", "activation_func": "swish", "weight_initialization": "KaimingNormal"},
    # LoCon (sepia is a colour change); the cosine decay settles the last steps' swings
    "lora": {"learn_rate": "0.001", "conv_dim": 4, "text_encoder_lr": 0.0, "lr_scheduler": "cosine"},
}
# A1111 users destroy hypernetworks by reusing an embedding's rate; refuse rates from here up.
HYPERNETWORK_MAX_RATE = 1e-3
MAX_VECTORS = 75
MAX_REPEATS = 10_000  # times one image is used per epoch (a kohya folder's N)


def sanitize_name(name: str) -> str:
    """A1111's rule for a new embedding or hypernetwork name: letters, digits and `._- ` only."""
    return "".join(c for c in name if c.isalnum() or c in "._- ").strip()


def parse_number_list(text: str, field: str) -> list[float]:
    """ "1, 2, 1" → [1.0, 2.0, 1.0], naming `field` when an entry is not a number."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ParamsError(f"{field}: expected comma-separated numbers such as \"1, 2, 1\", got {text!r}") from None


class TrainingParams(BaseModel):
    """Everything one training run needs; kind-specific fields are ignored by the other kind."""

    model_config = ConfigDict(extra="forbid")

    kind: TrainingKind
    name: str = Field(min_length=1, description="the embedding/hypernetwork name (sanitised as A1111 does)")
    data: str = Field(min_length=1, description="the folder of training images (and .txt captions)")
    model: str | None = Field(None, description="the checkpoint trained on (the demo model when None)")
    steps: int = Field(ge=1, le=1_000_000, description="the step to train up to (A1111's max steps)")
    learn_rate: str | None = Field(None, description='A1111 schedule, e.g. "0.005:100, 1e-3:1000, 1e-5"')
    batch_size: int = Field(1, ge=1, le=64)
    gradient_step: int = Field(1, ge=1, le=1024, description="gradient accumulation steps")
    clip_grad_mode: Literal["disabled", "value", "norm"] = "disabled"
    clip_grad_value: str = Field("0.1", description="the clip value, in the learn-rate schedule syntax")
    template: str | None = Field(None, description="a shipped template name or a template file")
    width: int | None = Field(None, ge=8, le=2048, description="None: the model's native size")
    height: int | None = Field(None, ge=8, le=2048)
    varsize: bool = Field(False, description="keep each image's size; batches hold images of one size")
    buckets: list[int] | None = Field(
        None, description="aspect-ratio buckets MIN,MAX,STEP in pixels (kohya's 256,1024,64): each image fitted "
        "to the bucket nearest its aspect ratio with an area up to width x height; a batch holds one bucket")
    repeats: int = Field(1, ge=1, le=MAX_REPEATS, description="times each image directly in `data` is used per "
                         "epoch (images in kohya-style N_name subfolders: N times)")
    use_weight: bool = Field(False, description="use the image's alpha channel as the loss weight")
    filename_regex: str = Field("", description="keep only what this regex finds in a file-name caption")
    filename_join: str = Field(" ", description="what joins the regex's finds")
    shuffle_tags: bool = False
    tag_drop_out: float = Field(0.0, ge=0.0, lt=1.0)
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    save_every: int = Field(500, ge=0, description="write <name>-<step> every N steps (0: never)")
    preview_every: int = Field(500, ge=0, description="draw a preview every N steps (0: never)")
    preview_prompt: str = Field("", description="empty: the first caption of the dataset")
    preview_seed: int = Field(1, ge=0, le=2**32 - 1)
    preview_steps: int = Field(20, ge=1, le=150)
    clip_skip: int = Field(1, ge=1, le=12)
    emphasis: Literal["Original", "No norm", "Ignore", "None"] = "Original"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the noise, timesteps and data order")
    resume: bool = Field(False, description="go on from the existing file (and its .optim) up to `steps`")
    overwrite: bool = Field(False, description="replace an existing file of this name")
    log_directory: str | None = Field(None, description="where saves, previews and the loss log go")
    # embedding
    init_text: str = "*"
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS)
    save_format: Literal["pt", "safetensors"] = "pt"
    # hypernetwork
    sizes: list[int] | None = Field(None, description="context widths (None: the model's)")
    layer_structure: list[float] = Field(default_factory=lambda: [1.0, 2.0, 1.0])
    activation_func: str | None = Field(None, description="None: linear (the demo model: swish)")
    weight_initialization: Literal[
        "Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal"] | None = Field(
        None, description="None: Normal (the demo model: KaimingNormal)")
    add_layer_norm: bool = False
    dropout_structure: list[float] | None = Field(None, description="None: no dropout")
    # lora (kohya's sd-scripts names in the file's ss_* metadata)
    network_dim: int = Field(8, ge=1, le=1024, description="rank of the linear layers' LoRA")
    network_alpha: float | None = Field(None, gt=0, description="scale = alpha / rank (None: alpha = rank)")
    conv_dim: int | None = Field(None, ge=0, le=1024, description="rank of 3x3 convolutions (LoCon); 0: none")
    conv_alpha: float | None = Field(None, gt=0)
    unet_lr: float | None = Field(None, ge=0, description="None: the learn rate")
    text_encoder_lr: float | None = Field(None, ge=0, description="0: the text encoder is not trained")
    optimizer: str = Field("AdamW", description="a torch.optim class: AdamW, Adam, SGD, Adafactor, ...")
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear"] | None = Field(
        None, description="None: constant (the demo model: cosine)")
    lr_warmup_steps: int = Field(0, ge=0)
    min_snr_gamma: float | None = Field(None, gt=0)
    noise_offset: float = Field(0.0, ge=0, le=1)
    caption_dropout_rate: float = Field(0.0, ge=0, lt=1)
    keep_tokens: int = Field(0, ge=0, le=75)

    @field_validator("name")
    @classmethod
    def _sanitized(cls, value: str) -> str:
        clean = sanitize_name(value)
        if not any(c.isalnum() for c in clean):
            raise ValueError("must contain a letter or digit (A1111 keeps only letters, digits and ._- )")
        return clean

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        return multiple_of_8(value)

    @field_validator("layer_structure")
    @classmethod
    def _layers(cls, value: list[float]) -> list[float]:
        if len(value) < 2 or value[0] != 1 or value[-1] != 1 or any(x <= 0 for x in value):
            raise ValueError(f"must start and end with 1 and hold positive numbers, e.g. 1,2,1; got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingParams:
        for field in ("learn_rate", "clip_grad_value"):
            text = getattr(self, field) if field == "clip_grad_value" else self.resolved_learn_rate
            try:
                parse_lr_schedule(text)
            except ParamsError as e:
                raise ValueError(f"{field}: {e}") from None
        if self.kind == "hypernetwork":
            highest = max(rate for rate, _ in parse_lr_schedule(self.resolved_learn_rate).pieces)
            if highest >= HYPERNETWORK_MAX_RATE:
                raise ValueError(
                    f"learn_rate: {highest:g} is an embedding's learning rate: it destroys a hypernetwork within a few "
                    f"steps; use one below {HYPERNETWORK_MAX_RATE:g} (the default is "
                    f"{DEFAULT_LEARN_RATES['hypernetwork']})")
            if self.dropout_structure is not None and len(self.dropout_structure) != len(self.layer_structure):
                raise ValueError(f"dropout_structure {self.dropout_structure} needs one entry per layer of "
                                 f"layer_structure {self.layer_structure}")
        if self.buckets is not None:
            if self.varsize:
                raise ValueError("buckets and varsize: choose one (buckets fit each image to a bucket of its "
                                 "aspect ratio; varsize keeps each image's own size)")
            try:
                check_buckets(self.buckets)
            except ParamsError as e:
                raise ValueError(str(e)) from None
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height: give both or neither")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite: choose one (resume goes on from the file, overwrite replaces it)")
        return self

    @property
    def resolved_learn_rate(self) -> str:
        return self.learn_rate or DEFAULT_LEARN_RATES[self.kind]

    @property
    def resolved_lr_scheduler(self) -> str:
        return self.lr_scheduler or A1111_DEFAULTS["lora"]["lr_scheduler"]

    def with_defaults(self, *, demo_model: bool) -> TrainingParams:
        """The options left open filled in for the model trained on (see `DEMO_DEFAULTS`)."""
        defaults = {**A1111_DEFAULTS[self.kind], **(DEMO_DEFAULTS.get(self.kind, {}) if demo_model else {})}
        return self.model_copy(update={k: v for k, v in defaults.items() if getattr(self, k) is None})

    @classmethod
    def create(cls, **fields: Any) -> TrainingParams:
        """Validate `fields`; a bad one raises `ParamsError` naming it and what was expected."""
        return checked(cls, fields)

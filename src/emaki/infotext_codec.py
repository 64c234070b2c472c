"""`GenerationParams` ⇄ infotext, both ways from one table of fields (specs/FORMATS.md §5).

Each `InfotextField` names its key, how its value is written from the params and the facts of
one image (`ImageFacts`: seed, model, network hashes...), and which params fields it reads
back. The table's order is A1111 v1.10.1's `create_infotext` order. Fields the format does not
record (init image, batch size, ...) keep their defaults when read back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emaki.errors import ParamsError
from emaki.infotext import build_infotext, parse_infotext
from emaki.params import INPAINTING_FILLS, GenerationParams

if TYPE_CHECKING:
    from emaki.prompts.styles import Style

VERSION_KEY = "Version"


@dataclass(frozen=True)
class ImageFacts:
    """What one image's infotext records beyond its params."""

    seed: int
    subseed: int
    model_name: str | None = None
    model_hash: str | None = None
    vae_name: str | None = None
    vae_hash: str | None = None
    uses_ensd: bool = True  # the sampler draws noise after the first step (A1111 writes ENSD then)
    eta: tuple[str, float] | None = None  # ("Eta" | "Eta DDIM", value) when the sampler's eta is not its default
    # What the run's extensions add: "Lora hashes", "TI hashes", inpainting's "Mask blur", ...
    networks: Mapping[str, object] = field(default_factory=dict)
    version: str = ""


Writer = Callable[[GenerationParams, ImageFacts], object]
Reader = Callable[[Mapping[str, str], str], dict[str, Any]]  # (parsed fields, this row's key) → params fields


@dataclass(frozen=True)
class InfotextField:
    key: str
    write: Writer
    read: Reader | None = None  # None: informative only (hashes), not a parameter


def _number(fields: Mapping[str, str], key: str, kind: type) -> Any:
    try:
        value = float(fields[key])
        return int(value) if kind is int else value
    except ValueError:
        raise ParamsError(f"infotext field {key!r}: expected a number, got {fields[key]!r}") from None


def _reads(name: str, kind: type = str) -> Reader:
    """Reads the row's key into the params field `name`."""

    def read(fields: Mapping[str, str], key: str) -> dict[str, Any]:
        if key not in fields:
            return {}
        return {name: fields[key] if kind is str else _number(fields, key, kind)}

    return read


def _reads_flag(name: str) -> Reader:
    """Reads a row A1111 writes as `True` into the bool params field `name`."""

    def read(fields: Mapping[str, str], key: str) -> dict[str, Any]:
        if key not in fields:
            return {}
        if fields[key].strip().lower() not in ("true", "false"):
            raise ParamsError(f"infotext field {key!r}: expected True or False, got {fields[key]!r}")
        return {name: fields[key].strip().lower() == "true"}

    return read


def _reads_size(width: str, height: str) -> Reader:
    """Reads a `WxH` value (parsed as `key-1`, `key-2`) into two params fields."""

    def read(fields: Mapping[str, str], key: str) -> dict[str, Any]:
        if f"{key}-1" not in fields:
            return {}
        return {width: _number(fields, f"{key}-1", int), height: _number(fields, f"{key}-2", int)}

    return read


def _reads_choice(name: str, values: Mapping[str, object]) -> Reader:
    """Reads a row whose value is one of `values`' keys (how A1111 writes a choice) into `name`."""

    def read(fields: Mapping[str, str], key: str) -> dict[str, Any]:
        if key not in fields:
            return {}
        if fields[key] not in values:
            raise ParamsError(f"infotext field {key!r}: expected one of {', '.join(values)}, got {fields[key]!r}")
        return {name: values[fields[key]]}

    return read


def _extension(key: str) -> Writer:
    """A row the run's extensions write (through `ImageFacts.networks`)."""
    return lambda p, f: f.networks.get(key)


def _variation(params: GenerationParams) -> bool:
    return params.subseed_strength > 0


def _hires(params: GenerationParams, value: object) -> object:
    return value if params.enable_hr else None


def _hires_resized(params: GenerationParams) -> bool:
    return bool(params.hr_resize_x or params.hr_resize_y)


def _table(*rows: tuple[str, Writer, Reader | None]) -> tuple[InfotextField, ...]:
    return tuple(InfotextField(*row) for row in rows)


FIELDS: tuple[InfotextField, ...] = _table(
    ("Steps", lambda p, f: p.steps, _reads("steps", int)),
    ("Sampler", lambda p, f: p.sampler_name, _reads("sampler_name")),
    ("Schedule type", lambda p, f: p.scheduler, _reads("scheduler")),
    ("CFG scale", lambda p, f: float(p.cfg_scale), _reads("cfg_scale", float)),
    ("Seed", lambda p, f: f.seed, _reads("seed", int)),
    ("Face restoration", lambda p, f: "GFPGAN" if p.restore_faces else None,
     _reads_choice("restore_faces", {"GFPGAN": True})),  # emaki runs GFPGAN only (emaki.faces)
    ("Size", lambda p, f: f"{p.width}x{p.height}", _reads_size("width", "height")),
    ("Model hash", lambda p, f: f.model_hash, None),
    ("Model", lambda p, f: f.model_name, _reads("model")),
    ("VAE hash", lambda p, f: f.vae_hash, None),
    ("VAE", lambda p, f: f.vae_name, _reads("vae")),
    ("Variation seed", lambda p, f: f.subseed if _variation(p) else None, _reads("subseed", int)),
    ("Variation seed strength", lambda p, f: float(p.subseed_strength) if _variation(p) else None,
     _reads("subseed_strength", float)),
    ("Seed resize from", lambda p, f: (f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
                                       if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0 else None),
     _reads_size("seed_resize_from_w", "seed_resize_from_h")),
    ("Denoising strength", lambda p, f: float(p.denoising_strength) if p.init_image or p.enable_hr else None,
     _reads("denoising_strength", float)),
    ("Conditional mask weight", _extension("Conditional mask weight"), _reads("inpainting_mask_weight", float)),
    ("Clip skip", lambda p, f: p.clip_skip if p.clip_skip > 1 else None, _reads("clip_skip", int)),
    ("ENSD", lambda p, f: p.eta_noise_seed_delta if p.eta_noise_seed_delta and f.uses_ensd else None,
     _reads("eta_noise_seed_delta", int)),
    # A1111 writes it from the ratio the run used (its `tomesd` patch); emaki's `TokenMerging`.
    ("Token merging ratio", _extension("Token merging ratio"), _reads("token_merging_ratio", float)),
    ("Token merging ratio hr", _extension("Token merging ratio hr"), _reads("token_merging_ratio_hr", float)),
    ("RNG", lambda p, f: p.rng if p.rng != "GPU" else None, _reads("rng")),
    ("Tiling", lambda p, f: "True" if p.tiling else None, _reads_flag("tiling")),
    ("Hires resize", lambda p, f: _hires(p, f"{p.hr_resize_x}x{p.hr_resize_y}" if _hires_resized(p) else None),
     _reads_size("hr_resize_x", "hr_resize_y")),
    ("Hires upscale", lambda p, f: _hires(p, None if _hires_resized(p) else float(p.hr_scale)),
     _reads("hr_scale", float)),
    ("Hires steps", lambda p, f: _hires(p, p.hr_second_pass_steps or None), _reads("hr_second_pass_steps", int)),
    ("Hires upscaler", lambda p, f: _hires(p, p.hr_upscaler), _reads("hr_upscaler")),
    ("Hires sampler", lambda p, f: _hires(p, p.hr_sampler_name), _reads("hr_sampler_name")),
    ("Hires prompt", lambda p, f: _hires(p, p.hr_prompt or None), _reads("hr_prompt")),
    ("Hires negative prompt", lambda p, f: _hires(p, p.hr_negative_prompt or None), _reads("hr_negative_prompt")),
    # Inpainting, in the order A1111's img2img adds them (its web UI's defaults are not written).
    ("Mask mode", _extension("Mask mode"),
     _reads_choice("inpainting_mask_invert", {"Inpaint masked": 0, "Inpaint not masked": 1})),
    ("Mask blur", _extension("Mask blur"), _reads("mask_blur", int)),
    ("Inpaint area", _extension("Inpaint area"),
     _reads_choice("inpaint_full_res", {"Whole picture": False, "Only masked": True})),
    ("Masked area padding", _extension("Masked area padding"), _reads("inpaint_full_res_padding", int)),
    ("Masked content", _extension("Masked content"),
     _reads_choice("inpainting_fill", {name: i for i, name in enumerate(INPAINTING_FILLS)})),
    # A1111's Lora extension adds its hashes when the networks activate, before the conditioning
    # adds `TI hashes`. Informative only: the prompt's `<lora:...>` tags re-apply the LoRAs.
    ("Lora hashes", lambda p, f: f.networks.get("Lora hashes"), None),
    ("TI hashes", lambda p, f: f.networks.get("TI hashes"), None),
    ("Emphasis", lambda p, f: p.emphasis if p.emphasis != "Original" else None, _reads("emphasis")),
    ("Hypernet", lambda p, f: p.hypernetwork or None, _reads("hypernetwork")),
    ("Hypernet hash", lambda p, f: f.networks.get("Hypernet hash"), None),
    ("Hypernet strength", lambda p, f: (float(p.hypernetwork_strength)
                                        if p.hypernetwork and p.hypernetwork_strength != 1 else None),
     _reads("hypernetwork_strength", float)),
    ("Prompt dialect", lambda p, f: "NovelAI" if p.prompt_dialect == "novelai" else None,
     lambda fields, key: {"prompt_dialect": "novelai"} if fields.get(key, "").lower() == "novelai" else {}),
    ("Noise multiplier", _extension("Noise multiplier"), _reads("initial_noise_multiplier", float)),
    ("Eta", lambda p, f: f.eta[1] if f.eta and f.eta[0] == "Eta" else None, _reads("eta", float)),
    ("Eta DDIM", lambda p, f: f.eta[1] if f.eta and f.eta[0] == "Eta DDIM" else None, _reads("eta", float)),
    # A1111's CFG denoiser adds NGMS once it has skipped the negative prompt, during sampling.
    ("NGMS", _extension("NGMS"), _reads("s_min_uncond", float)),
    ("NGMS all steps", _extension("NGMS all steps"), _reads_flag("s_min_uncond_all")),
    # emaki's own speed approximations (no A1111 name), and the precision when it is not fp32.
    ("Cache interval", _extension("Cache interval"), _reads("cache_interval", int)),
    ("Gate step", _extension("Gate step"), _reads("gate_step", int)),
    ("Precision", _extension("Precision"), None),
)
KNOWN_KEYS = frozenset(f.key for f in FIELDS)
HIRES_KEYS = ("Hires upscaler", "Hires upscale", "Hires resize-1")


def encode_infotext(params: GenerationParams, facts: ImageFacts) -> str:
    """The infotext of one image: `params` as run (seed and size resolved) plus `facts`.
    Network fields no table row knows (a new network kind's) come before `Version`."""
    values: dict[str, object] = {f.key: f.write(params, facts) for f in FIELDS}
    values |= {k: v for k, v in facts.networks.items() if k not in KNOWN_KEYS}
    values[VERSION_KEY] = facts.version or None
    return build_infotext(params.prompt, params.negative_prompt, values)


def params_from_fields(fields: Mapping[str, str], styles: Sequence[Style] = ()) -> GenerationParams:
    """`GenerationParams` from a parsed infotext (`parse_infotext`); absent fields keep A1111's
    defaults (GPU noise, CLIP skip 1, ...). The model and VAE come back as written (names, looked
    up in the workspace by the engine). `styles` found in the prompts are taken back out of them
    into `styles` (`with_styles_taken_out`)."""
    values: dict[str, Any] = {"prompt": fields.get("Prompt", ""), "negative_prompt": fields.get("Negative prompt", "")}
    for row in FIELDS:
        if row.read is not None:
            values |= row.read(fields, row.key)
    values.setdefault("rng", "GPU")
    if any(key in fields for key in HIRES_KEYS):
        values["enable_hr"] = True
    return GenerationParams.create(**with_styles_taken_out(values, styles))


def with_styles_taken_out(values: dict[str, Any], styles: Sequence[Style]) -> dict[str, Any]:
    """A1111's reading of styles (`parse_generation_parameters`, "Apply if any"): an infotext
    records the styled prompts only, so the styles found in them (`extract_styles`) are taken
    out and named in `styles`; with a hires prompt, only when it holds the same styles (its text
    then empty where it equals the first pass's)."""
    if not styles:
        return values
    # Imported here: the prompts package pulls in torch, and most readers never need it.
    from emaki.prompts.styles import extract_styles

    names, prompt, negative = extract_styles(values["prompt"], values["negative_prompt"], styles)
    if not names:
        return values
    taken = {"prompt": prompt, "negative_prompt": negative, "styles": names}
    if "hr_prompt" in values or "hr_negative_prompt" in values:
        hr_names, hr_prompt, hr_negative = extract_styles(values.get("hr_prompt", values["prompt"]),
                                                          values.get("hr_negative_prompt", values["negative_prompt"]),
                                                          styles)
        if hr_names != names:
            return values
        taken |= {"hr_prompt": "" if hr_prompt == prompt else hr_prompt,
                  "hr_negative_prompt": "" if hr_negative == negative else hr_negative}
    return values | taken


def decode_infotext(text: str, styles: Sequence[Style] = ()) -> GenerationParams:
    """The params an infotext records (see `params_from_fields`)."""
    return params_from_fields(parse_infotext(text), styles)

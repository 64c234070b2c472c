"""The axes of the X/Y/Z plot: one table row per axis, in A1111 v1.10.1's order.

A1111's `scripts/xyz_grid.py` lists its axes in one list; its web UI (and so the `script_args` of
`/sdapi/v1/txt2img` and `/img2img`) numbers them after dropping the rows of the other tab:
`a1111_axes(img2img=False)[x_type]` is the axis an A1111 client means. Rows whose setting emaki
does not have yet (`apply` None) keep their place, so the numbers stay A1111's; choosing one is a
clear error. Axes A1111 lacks (`OURS`) come after its rows and have no A1111 number.

Adding an axis is adding a row: its label, its value kind, how it changes a cell's params
(`apply`), and optionally how its values are checked against the workspace before anything runs
(`resolve`), how a value is shown in the legend (`show`), how costly a change is (`cost`), and
the closed set its values come from, where there is one (`choices`, A1111's dropdown).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emaki.errors import EmakiError, ParamsError
from emaki.params import SPEEDS, GenerationParams, speed_preset
from emaki.workspace import Workspace
from emaki.xyz.choices import (
    Choices,
    checkpoint_choices,
    hires_upscaler_choices,
    rng_choices,
    sampler_choices,
    schedule_choices,
    style_choices,
    vae_choices,
)
from emaki.xyz.values import expand_floats, expand_ints

Kind = Literal["int", "float", "str", "orders"]  # "orders": every permutation of the values
Mode = Literal["both", "txt2img", "img2img"]
Fields = dict[str, Any]  # a cell's params as a dict, changed by each axis in turn
Apply = Callable[[Fields, Any, Sequence[Any]], None]  # (fields, this cell's value, all values)

#: Prompt order makes n! cells; past this many tokens that is more than a grid can hold.
MAX_ORDER_TOKENS = 7


@dataclass(frozen=True)
class AxisContext:
    """What an axis's values are checked against before a grid runs."""

    params: GenerationParams  # the grid's params, before any axis applies
    workspace: Workspace | None = None  # None: names of files (checkpoints, VAEs) cannot be checked


Resolve = Callable[["Axis", list[Any], AxisContext], list[Any]]  # typed values -> what `apply` gets


def with_label(axis: Axis, value: Any) -> str:
    """A1111's `format_value_add_label`: "Steps: 20", "CFG Scale: 7.5"."""
    return f"{axis.label}: {bare(axis, value)}"


def bare(axis: Axis, value: Any) -> str:
    """A1111's `format_value`: the value alone (floats rounded to 8 places)."""
    return str(round(value, 8) if isinstance(value, float) else value)


def joined(axis: Axis, value: Any) -> str:
    return ", ".join(value)


def file_name(axis: Axis, value: Any) -> str:
    return os.path.basename(str(value))


def nothing(axis: Axis, value: Any) -> str:
    return ""


@dataclass(frozen=True)
class Axis:
    """One axis a grid can vary (a row of A1111's `axis_options`)."""

    label: str
    kind: Kind
    apply: Apply | None  # None: A1111 has this axis, emaki not yet (`missing` says why)
    show: Callable[[Axis, Any], str] = with_label
    resolve: Resolve | None = None
    cost: float = 0.0  # the costliest axis is the outer loop (a checkpoint loads once per value)
    mode: Mode = "both"  # A1111 shows the row on the txt2img tab, the img2img tab, or both
    aliases: tuple[str, ...] = ()
    missing: str = "emaki has no such setting yet"
    choices: Choices | None = None  # the closed set of values (A1111's dropdown), given a workspace

    @property
    def supported(self) -> bool:
        return self.apply is not None

    def names(self) -> tuple[str, ...]:
        return (self.label, *self.aliases)


def apply_speed(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    """The speed preset's fields (`emaki generate --speed`) for the cell's steps: an axis that
    puts the exact path beside `--speed fast`."""
    fields.update(speed_preset(value, fields["steps"]))


def set_field(name: str) -> Apply:
    """An axis that sets one params field (A1111's `apply_field`)."""

    def apply(fields: Fields, value: Any, values: Sequence[Any]) -> None:
        fields[name] = value

    return apply


def do_nothing(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    """The "Nothing" axis: one cell, no change."""


# --- prompt axes ---

def search_replace(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    """Prompt S/R: the first value is searched for in both prompts and replaced by this cell's."""
    fields["prompt"] = fields["prompt"].replace(values[0], value)
    fields["negative_prompt"] = fields["negative_prompt"].replace(values[0], value)


def check_search(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    search, params = values[0], context.params
    if not search or (search not in params.prompt and search not in params.negative_prompt):
        raise ParamsError(f"{axis.label}: the first value {search!r} (the text replaced by the others) does not "
                          "occur in the prompt or the negative prompt")
    return values


def reorder_prompt(prompt: str, order: Sequence[str]) -> str:
    """The prompt with the tokens of `order` put back in that order, where the tokens stood.

    >>> reorder_prompt("1girl, red hair, smile, outdoors", ("smile", "red hair"))
    '1girl, smile, red hair, outdoors'
    """
    standing = sorted(order, key=prompt.find)  # the tokens as they stand in the prompt
    pieces, rest = [], prompt
    for token in standing:
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token):]
    return "".join(piece + token for piece, token in zip(pieces, order)) + rest


def prompt_order(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    fields["prompt"] = reorder_prompt(fields["prompt"], value)


def check_order_tokens(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    tokens = values[0] if values else ()
    for token in tokens:
        if not token or token not in context.params.prompt:
            raise ParamsError(f"{axis.label}: {token!r} does not occur in the prompt")
    return values


_LORA_TAG = re.compile(r"<(lora|lyco):([^>]+)>")


def reweight_loras(prompt: str, weight: float) -> str:
    """Every `<lora:...>` tag's weight set to `weight` — the text encoder's and, where the tag
    gives it apart, the UNet's (`te=`/`unet=` too); other arguments are kept.

    >>> reweight_loras("1girl, <lora:flat:0.8>, <lora:eyes>, <lora:x:1:0.5:dyn=4>", 0.25)
    '1girl, <lora:flat:0.25>, <lora:eyes:0.25>, <lora:x:0.25:0.25:dyn=4>'
    """
    text = str(round(weight, 8))

    def one(match: re.Match[str]) -> str:
        name, *rest = match[2].split(":")
        args, positional, named_te = [name], 0, False
        for arg in rest:
            key, equals, _ = arg.partition("=")
            if equals:
                args.append(f"{key}={text}" if key in ("te", "unet") else arg)
                named_te |= key == "te"
            else:
                positional += 1
                args.append(text if positional <= 2 else arg)  # 1: text encoder, 2: UNet, 3: dyn
        if positional == 0 and not named_te:
            args.insert(1, text)
        return f"<{match[1]}:{':'.join(args)}>"

    return _LORA_TAG.sub(one, prompt)


def lora_weight(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    fields["prompt"] = reweight_loras(fields["prompt"], value)


def check_loras(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    if not _LORA_TAG.search(context.params.prompt):
        raise ParamsError(f"{axis.label}: the prompt has no <lora:name:weight> tag whose weight to vary")
    return values


# --- names checked against the workspace ---

def add_styles(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    """Styles: the cell's styles after the grid's own (A1111's `p.styles.extend`)."""
    fields["styles"] = [*fields["styles"], *value]


def check_styles(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    """Each value is a comma-separated list of style names (A1111 splits it on ","); an empty
    value adds none. Unlike A1111, which skips a name it does not know, an unknown name is an error."""
    from emaki.prompts.styles import find_styles, read_styles, styles_files

    names = [tuple(name.strip() for name in value.split(",") if name.strip()) for value in values]
    if context.workspace is not None:
        styles = read_styles(styles_files(context.workspace))
        try:
            find_styles([name for value in names for name in value], styles)
        except EmakiError as e:
            raise ParamsError(f"{axis.label}: {e}") from None
    return names


def check_samplers(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    from emaki.sampling import parse_sampler_name

    for value in values:
        try:
            parse_sampler_name(value)
        except EmakiError as e:
            raise ParamsError(f"{axis.label}: {e}") from None
    return values


def check_schedules(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    from emaki.sampling import find_schedule

    try:
        return [find_schedule(value).label for value in values]
    except EmakiError as e:
        raise ParamsError(f"{axis.label}: {e}") from None


def check_choices(*choices: str) -> Resolve:
    def resolve(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
        by_key = {choice.lower(): choice for choice in choices}
        unknown = [value for value in values if value.lower() not in by_key]
        if unknown:
            raise ParamsError(f"{axis.label}: {unknown[0]!r} is not one of {', '.join(choices)}")
        return [by_key[value.lower()] for value in values]

    return resolve


def _title_name(value: str) -> str:
    """An A1111 checkpoint title ("anything-v3.safetensors [3a4b5c6d7e]") without its hash."""
    return re.sub(r"\s*\[[0-9a-fA-F]{8,10}\]$", "", value.strip())


def find_checkpoint(value: str, workspace: Workspace) -> str | None:
    """The checkpoint a grid value names: a path, or a file name or stem (an A1111 title's,
    sub-folder included) in the workspace's model folders, or the demo model — never a hub id."""
    from emaki.engine.inventory import CHECKPOINT_SUFFIXES
    from emaki.models.resolve import find_model_by_name
    from emaki.networks import walk_files

    name = _title_name(value)
    path = Path(name).expanduser()
    if path.is_file() or (path.is_dir() and (path / "model_index.json").is_file()):
        return str(path)
    found = find_model_by_name(name, workspace)
    if found is not None:
        return found
    for folder in workspace.folders("checkpoints"):
        for candidate in walk_files([folder], CHECKPOINT_SUFFIXES):
            relative = candidate.relative_to(folder).as_posix() if candidate.is_relative_to(folder) else ""
            if name in (candidate.name, candidate.stem, relative, relative.rsplit(".", 1)[0]):
                return str(candidate)
    return None


def check_checkpoints(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    if context.workspace is None:
        return values
    found = []
    for value in values:
        path = find_checkpoint(value, context.workspace)
        if path is None:
            folders = ", ".join(str(f) for f in context.workspace.folders("checkpoints"))
            raise ParamsError(f"{axis.label}: no checkpoint named {value!r} in {folders} (nor the demo model)")
        found.append(path)
    return found


def check_vaes(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    """"None" and "Automatic" (A1111's choices) mean the checkpoint's own VAE; other names must
    be VAE files of the workspace (or paths)."""
    from emaki.engine.engine import resolve_vae

    found: list[str | None] = []
    for value in values:
        if value.strip().lower() in ("none", "automatic", "auto", ""):
            found.append(None)
        elif context.workspace is None:
            found.append(value)
        else:
            try:
                found.append(resolve_vae(value, context.workspace))
            except EmakiError as e:
                raise ParamsError(f"{axis.label}: {e}") from None
    return found


def check_upscalers(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    from emaki.upscalers import find_upscaler

    for value in values:
        try:
            find_upscaler(value, context.workspace, field=axis.label)
        except EmakiError as e:
            raise ParamsError(f"{axis.label}: {e}") from None
    return values


_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def set_size(fields: Fields, value: Any, values: Sequence[Any]) -> None:
    width, height = value
    fields["width"], fields["height"] = width, height


def check_sizes(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    sizes = []
    for value in values:
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ParamsError(f"{axis.label}: expected WIDTHxHEIGHT like 512x768, got {value!r}")
        sizes.append((int(match[1]), int(match[2])))
    return sizes


def check_hypernetwork(axis: Axis, values: list[Any], context: AxisContext) -> list[Any]:
    if not context.params.hypernetwork:
        raise ParamsError(f"{axis.label}: no hypernetwork is chosen (the `hypernetwork` parameter, --hypernetwork) "
                          "whose strength to vary")
    return values


def _missing(label: str, kind: Kind, mode: Mode = "both", *, cost: float = 0.0, missing: str = "") -> Axis:
    """A row A1111 has and emaki does not yet: it holds A1111's place (its number)."""
    return Axis(label, kind, None, mode=mode, cost=cost, missing=missing or "emaki has no such setting yet")


# A1111 v1.10.1's `axis_options`, in its order (the order is its API's numbering: keep it).
A1111_AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", do_nothing, show=nothing),
    Axis("Seed", "int", set_field("seed")),
    Axis("Var. seed", "int", set_field("subseed"), aliases=("Variation seed",)),
    Axis("Var. strength", "float", set_field("subseed_strength"), aliases=("Variation strength",)),
    Axis("Steps", "int", set_field("steps")),
    Axis("Hires steps", "int", set_field("hr_second_pass_steps"), mode="txt2img"),
    Axis("CFG Scale", "float", set_field("cfg_scale")),
    _missing("Image CFG Scale", "float", "img2img", missing="emaki runs no instruct-pix2pix models"),
    Axis("Prompt S/R", "str", search_replace, show=bare, resolve=check_search),
    Axis("Prompt order", "orders", prompt_order, show=joined, resolve=check_order_tokens),
    Axis("Sampler", "str", set_field("sampler_name"), show=bare, resolve=check_samplers, mode="txt2img",
         choices=sampler_choices),
    Axis("Hires sampler", "str", set_field("hr_sampler_name"), resolve=check_samplers, mode="txt2img",
         choices=sampler_choices),
    Axis("Sampler", "str", set_field("sampler_name"), show=bare, resolve=check_samplers, mode="img2img",
         choices=sampler_choices),
    Axis("Checkpoint name", "str", set_field("model"), show=file_name, resolve=check_checkpoints, cost=1.0,
         aliases=("Checkpoint", "Model"), choices=checkpoint_choices),
    Axis("Negative Guidance minimum sigma", "float", set_field("s_min_uncond"), aliases=("NGMS",)),
    _missing("Sigma Churn", "float"),
    _missing("Sigma min", "float"),
    _missing("Sigma max", "float"),
    Axis("Sigma noise", "float", set_field("s_noise")),
    Axis("Schedule type", "str", set_field("scheduler"), resolve=check_schedules, aliases=("Scheduler",),
         choices=schedule_choices),
    _missing("Schedule min sigma", "float"),
    _missing("Schedule max sigma", "float"),
    _missing("Schedule rho", "float"),
    _missing("Beta schedule alpha", "float"),
    _missing("Beta schedule beta", "float"),
    Axis("Eta", "float", set_field("eta")),
    Axis("Clip skip", "int", set_field("clip_skip")),
    Axis("Denoising", "float", set_field("denoising_strength"), aliases=("Denoising strength",)),
    Axis("Initial noise multiplier", "float", set_field("initial_noise_multiplier")),
    _missing("Extra noise", "float"),
    Axis("Hires upscaler", "str", set_field("hr_upscaler"), resolve=check_upscalers, mode="txt2img",
         choices=hires_upscaler_choices),
    Axis("Cond. Image Mask Weight", "float", set_field("inpainting_mask_weight"), mode="img2img"),
    Axis("VAE", "str", set_field("vae"), resolve=check_vaes, cost=0.7, choices=vae_choices),
    Axis("Styles", "str", add_styles, resolve=check_styles, aliases=("Style",), choices=style_choices),
    _missing("UniPC Order", "int", cost=0.5),
    _missing("Face restore", "str"),
    Axis("Token merging ratio", "float", set_field("token_merging_ratio")),
    Axis("Token merging ratio high-res", "float", set_field("token_merging_ratio_hr")),
    _missing("Always discard next-to-last sigma", "str"),
    _missing("SGM noise multiplier", "str", missing="emaki runs SD 1.x models only"),
    _missing("Refiner checkpoint", "str", cost=1.0),
    _missing("Refiner switch at", "float"),
    Axis("RNG source", "str", set_field("rng"), resolve=check_choices("GPU", "CPU", "NV"), choices=rng_choices),
    _missing("FP8 mode", "str", cost=0.9),
    Axis("Size", "str", set_size, show=bare, resolve=check_sizes),
)

# Axes A1111 lacks: after its rows, with no A1111 number.
OURS: tuple[Axis, ...] = (
    Axis("LoRA weight", "float", lora_weight, resolve=check_loras, aliases=("Lora weight",)),
    Axis("Hypernet str.", "float", set_field("hypernetwork_strength"), resolve=check_hypernetwork,
         aliases=("Hypernetwork strength",)),
    Axis("Cache interval", "int", set_field("cache_interval")),
    Axis("Gate step", "int", set_field("gate_step")),
    Axis("Speed", "str", apply_speed, resolve=check_choices(*SPEEDS), choices=lambda workspace: list(SPEEDS)),
)
AXES: tuple[Axis, ...] = A1111_AXES + OURS
NOTHING = AXES[0]


def a1111_axes(img2img: bool) -> tuple[Axis, ...]:
    """The axes A1111's txt2img (or img2img) tab lists: `script_args` number them from 0."""
    return tuple(axis for axis in A1111_AXES if axis.mode in ("both", "img2img" if img2img else "txt2img"))


def find_axis(name: str) -> Axis:
    """The axis called `name` (its A1111 label or an alias, any case); an unknown or not yet
    supported one is a `ParamsError` naming it."""
    key = name.strip().lower()
    for axis in AXES:
        if key in (n.lower() for n in axis.names()):
            if not axis.supported:
                raise ParamsError(f"axis {axis.label!r}: {axis.missing}")
            return axis
    known = ", ".join(dict.fromkeys(axis.label for axis in AXES if axis.supported))
    raise ParamsError(f"unknown axis {name!r}; expected one of: {known}")


@dataclass(frozen=True)
class AxisValues:
    """An axis with its values: `values` as typed (shown in legends), `applied` what the
    cells get (a checkpoint's path for its name)."""

    axis: Axis
    values: list[Any]
    applied: list[Any] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [self.axis.show(self.axis, value) for value in self.values]


def typed_values(axis: Axis, texts: Sequence[str]) -> list[Any]:
    """The values of an axis as its kind reads them: ranges expanded for numbers, every order
    of the tokens for Prompt order."""
    if axis.kind in ("int", "float"):
        numbers = [text for text in texts if text.strip()]  # A1111 skips empty ones: "10, 20," is two
        if not numbers:
            raise ParamsError("no values given")
        return list(expand_ints(numbers) if axis.kind == "int" else expand_floats(numbers))
    if axis.kind == "orders":
        if len(texts) > MAX_ORDER_TOKENS:
            raise ParamsError(f"{len(texts)} tokens make {math.factorial(len(texts))} orders; at most "
                              f"{MAX_ORDER_TOKENS} tokens")
        return list(itertools.permutations(texts))
    return list(texts)


def axis_values(axis: Axis, texts: Sequence[str], context: AxisContext) -> AxisValues:
    """Typed, checked values of `axis` (`texts` already split); errors name the axis."""
    if axis is NOTHING:
        return AxisValues(axis, [0], [0])
    if not any(texts):  # "" splits into one empty value
        raise ParamsError(f"{axis.label}: no values given")
    try:
        values = typed_values(axis, texts)
    except ParamsError as e:
        raise ParamsError(f"{axis.label}: {e}") from None
    applied = axis.resolve(axis, values, context) if axis.resolve is not None else list(values)
    return AxisValues(axis, values, applied)

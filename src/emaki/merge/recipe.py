"""Merge recipes as data: what was merged (paths and sha256), how, with which options.

A recipe is JSON:

```json
{"emaki_merge_recipe": 1, "mode": "weighted-sum", "alpha": 0.3,
 "blocks": null, "text_encoder_alpha": null, "vae_alpha": null, "dtype": "fp16",
 "inputs": {"a": {"path": "/m/nai.safetensors", "sha256": "…", "legacy_hash": "…", "recipe": null},
            "b": {"path": "/m/wd13.ckpt", "sha256": "…", "legacy_hash": "…", "recipe": null},
            "c": null},
 "vae": null, "discard": null, "name": null}
```

A recipe that bakes LoRAs into the result adds `"loras"`, applied in order after the merge:
`[{"path": "/loras/detail.safetensors", "name": "detail", "hash": "0123456789ab", "te": 0.8,
"unet": 0.8}]` (`hash`: the 12 hex of A1111's `Lora hashes`). Recipes without LoRAs have no
such key, so their JSON is what it was before LoRAs could be baked.

An input that is itself an emaki merge carries its own recipe, so a merge of merges can be
rebuilt from the leaves when an intermediate file is gone. The same JSON (canonical: sorted
keys, no spaces) goes into the output's `emaki_merge_recipe` metadata next to A1111's
`sd_merge_recipe` and `sd_merge_models` (specs/FORMATS.md §7.1), so replaying a recipe writes a
bit-identical file. A saved recipe file may add `"output"`, the path it was written to.

A recipe may come from anywhere (a downloaded model carries one), so reading one is bounded:
at most `MAX_RECIPE_BYTES` of JSON, merges nested at most `MAX_RECIPE_DEPTH` deep, at most
`MAX_RECIPE_PARTS` models, LoRAs and merges in all (each one is opened, or rebuilt with its own
buffers, when the recipe is replayed), and a `discard` regex that cannot backtrack for long
(`emaki.safe_regex`).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaki.errors import EmakiError
from emaki.merge.blocks import UNET_BLOCKS
from emaki.safe_regex import bounded_regex

RECIPE_VERSION = 1
RECIPE_METADATA_KEY = "emaki_merge_recipe"
MODES = ("weighted-sum", "add-difference", "no-interpolation")
DTYPES = ("fp16", "bf16", "fp32")
#: A recipe's JSON (a file, or a model's metadata); real ones are a few KB per merge.
MAX_RECIPE_BYTES = 4 * 1024 * 1024
#: Merges nested in merges (a merge of merges of ...): 32 generations of emaki merges.
MAX_RECIPE_DEPTH = 32
#: Models, VAEs, LoRAs and merges in one recipe, nested ones included.
MAX_RECIPE_PARTS = 256
#: Tensor names a `discard` regex is matched against are at most this long (its work bound).
MAX_DISCARD_KEY_LENGTH = 256
A1111_METHODS = {
    "weighted-sum": "Weighted sum",
    "add-difference": "Add difference",
    "no-interpolation": "No interpolation",
}


class MergeError(EmakiError, ValueError):
    """A merge cannot be done as asked: bad recipe, incompatible models, missing inputs."""


@dataclass
class _Reading:
    """What one recipe being read may still hold (`MAX_RECIPE_PARTS`), and where it is from."""

    source: str
    parts: int = 0

    def count(self, where: str) -> None:
        self.parts += 1
        if self.parts > MAX_RECIPE_PARTS:
            raise MergeError(
                f"{self.source}: the recipe holds more than {MAX_RECIPE_PARTS} models, LoRAs and "
                f"merges (at {where}); emaki replays at most {MAX_RECIPE_PARTS}"
            )


@dataclass(frozen=True)
class InputRef:
    """One input model: where it was, what it hashed to, and how it was made if emaki made it."""

    path: str
    sha256: str | None = None
    legacy_hash: str | None = None
    recipe: MergeRecipe | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "legacy_hash": self.legacy_hash,
            "recipe": self.recipe.to_dict() if self.recipe else None,
        }

    @classmethod
    def from_dict(
        cls, data: Any, where: str, *, depth: int = 0, reading: _Reading | None = None
    ) -> InputRef:
        """`depth`: merges around this input (its own recipe is one deeper)."""
        if reading is not None:
            reading.count(where)
        if isinstance(data, str):
            return cls(path=data)
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise MergeError(f"recipe: {where} must be an object with a 'path' string")
        nested = data.get("recipe")
        return cls(
            path=data["path"],
            sha256=_opt_str(data.get("sha256"), f"{where}.sha256"),
            legacy_hash=_opt_str(data.get("legacy_hash"), f"{where}.legacy_hash"),
            recipe=(
                MergeRecipe.from_dict(nested, f"{where}.recipe", depth=depth + 1, reading=reading)
                if nested
                else None
            ),
        )


@dataclass(frozen=True)
class LoraRef:
    """A LoRA baked into the result: its file, the name it was asked for by, its 12-hex hash
    (A1111's `Lora hashes`, filled in when merged), and the text-encoder and UNet multipliers."""

    path: str
    te: float = 1.0
    unet: float = 1.0
    hash: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "hash": self.hash, "te": self.te,
                "unet": self.unet}

    @classmethod
    def from_dict(cls, data: Any, where: str, *, reading: _Reading | None = None) -> LoraRef:
        if reading is not None:
            reading.count(where)
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise MergeError(f"recipe: {where} must be an object with a 'path' string")
        multipliers: list[float] = []
        for label in ("te", "unet"):
            value: Any = data.get(label, multipliers[0] if multipliers else 1.0)
            if not _finite(value):
                raise MergeError(
                    f"recipe: {where}.{label} must be a finite number, got {_shown(value)}"
                )
            multipliers.append(float(value))
        return cls(
            path=data["path"],
            te=multipliers[0],
            unet=multipliers[1],
            hash=_opt_str(data.get("hash"), f"{where}.hash"),
            name=_opt_str(data.get("name"), f"{where}.name"),
        )


@dataclass(frozen=True)
class MergeRecipe:
    """How to make one model from two or three (mode, α or 25 block weights, options)."""

    mode: str
    a: InputRef
    b: InputRef | None = None
    c: InputRef | None = None
    alpha: float = 0.5
    blocks: tuple[float, ...] | None = None
    text_encoder_alpha: float | None = None
    vae_alpha: float | None = None
    dtype: str | None = None
    vae: InputRef | None = None
    discard: str | None = None
    name: str | None = None
    loras: tuple[LoraRef, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in MODES:
            raise MergeError(f"recipe: mode {_shown(self.mode)} is not one of {', '.join(MODES)}")
        wanted = {"weighted-sum": 2, "add-difference": 3, "no-interpolation": 1}[self.mode]
        given = 1 + (self.b is not None) + (self.c is not None)
        if self.c is not None and self.b is None:
            raise MergeError("recipe: model C given without model B")
        if given != wanted:
            raise MergeError(
                f"recipe: {self.mode} takes {wanted} model{'s' if wanted > 1 else ''} "
                f"(A{', B' if wanted > 1 else ''}"
                f"{', C' if wanted > 2 else ''}), got {given}"
            )
        for name, value in (
            ("alpha", self.alpha),
            ("text_encoder_alpha", self.text_encoder_alpha),
            ("vae_alpha", self.vae_alpha),
        ):
            if value is not None and not _finite(value):
                raise MergeError(f"recipe: {name} must be a finite number, got {_shown(value)}")
        if self.blocks is not None:
            if len(self.blocks) != len(UNET_BLOCKS):
                raise MergeError(
                    f"recipe: blocks needs {len(UNET_BLOCKS)} values (IN00-IN11, M00, "
                    f"OUT00-OUT11), got {len(self.blocks)}"
                )
            if not all(_finite(v) for v in self.blocks):
                raise MergeError("recipe: every block weight must be a finite number")
        for lora in self.loras:
            if not all(math.isfinite(v) for v in (lora.te, lora.unet)):
                raise MergeError(f"recipe: LoRA {lora.label!r}: multipliers must be finite numbers")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise MergeError(
                f"recipe: dtype {_shown(self.dtype)} is not one of {', '.join(DTYPES)}"
            )
        if self.discard is not None:
            discard_regex(self.discard)

    @property
    def inputs(self) -> dict[str, InputRef]:
        return {k: v for k, v in (("a", self.a), ("b", self.b), ("c", self.c)) if v is not None}

    def block_alpha(self, block: str | None) -> float:
        """The α for a key of `block` (blocks.py): block weights, TE/VAE α, else `alpha`."""
        if block == "TE" and self.text_encoder_alpha is not None:
            return float(self.text_encoder_alpha)
        if block == "VAE" and self.vae_alpha is not None:
            return float(self.vae_alpha)
        if self.blocks is not None and block in UNET_BLOCKS:
            return float(self.blocks[UNET_BLOCKS.index(block)])
        return float(self.alpha)

    def default_name(self) -> str:
        """A1111's default output name (specs §7.1), then `+ W(lora)` per baked LoRA
        (`TE/UNET(lora)` when the two differ)."""
        return self._merge_name() + "".join(
            f" + {_number(lora.te) if lora.te == lora.unet else f'{_number(lora.te)}/{_number(lora.unet)}'}"
            f"({lora.label})"
            for lora in self.loras
        )

    def _merge_name(self) -> str:
        a = Path(self.a.path).stem
        if self.mode == "weighted-sum":
            assert self.b is not None
            b = Path(self.b.path).stem
            return f"{round(1 - self.alpha, 2)}({a}) + {round(self.alpha, 2)}({b})"
        if self.mode == "add-difference":
            assert self.b is not None and self.c is not None
            return (
                f"{a} + {round(self.alpha, 2)}({Path(self.b.path).stem} - {Path(self.c.path).stem})"
            )
        return a

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "emaki_merge_recipe": RECIPE_VERSION,
            "mode": self.mode,
            "alpha": self.alpha,
            "blocks": list(self.blocks) if self.blocks is not None else None,
            "text_encoder_alpha": self.text_encoder_alpha,
            "vae_alpha": self.vae_alpha,
            "dtype": self.dtype,
            "inputs": {
                k: (ref.to_dict() if ref else None)
                for k, ref in (("a", self.a), ("b", self.b), ("c", self.c))
            },
            "vae": self.vae.to_dict() if self.vae else None,
            "discard": self.discard,
            "name": self.name,
        }
        if self.loras:
            data["loras"] = [lora.to_dict() for lora in self.loras]
        return data

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the form written into model metadata."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        where: str = "recipe",
        *,
        depth: int = 1,
        reading: _Reading | None = None,
    ) -> MergeRecipe:
        """The recipe in parsed JSON `data` (`where` names it in errors; `depth`: 1 + the merges
        around it), within the limits of the module doc."""
        reading = reading if reading is not None else _Reading(where)
        if depth > MAX_RECIPE_DEPTH:
            raise MergeError(
                f"{reading.source}: merges are nested more than {MAX_RECIPE_DEPTH} deep in the "
                f"recipe; emaki replays at most {MAX_RECIPE_DEPTH} levels"
            )
        reading.count(where)
        if not isinstance(data, dict):
            raise MergeError(f"{where}: expected a JSON object")
        version = data.get("emaki_merge_recipe", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise MergeError(
                f"{where}: recipe version {_shown(version)} is not supported "
                f"(expected {RECIPE_VERSION})"
            )
        inputs = data.get("inputs")
        if not isinstance(inputs, dict) or not inputs.get("a"):
            raise MergeError(f"{where}: 'inputs' must hold at least model 'a'")
        refs = {
            k: (
                InputRef.from_dict(inputs[k], f"{where}.inputs.{k}", depth=depth, reading=reading)
                if inputs.get(k)
                else None
            )
            for k in ("a", "b", "c")
        }
        loras = data.get("loras") or []
        if not isinstance(loras, list):
            raise MergeError(f"{where}: 'loras' must be a list of objects")
        blocks = data.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            raise MergeError(f"{where}: 'blocks' must be a list of {len(UNET_BLOCKS)} numbers")
        mode = data.get("mode", "weighted-sum")
        if not isinstance(mode, str):
            raise MergeError(f"{where}: mode must be one of {', '.join(MODES)}, got {_shown(mode)}")
        try:
            return cls(
                mode=mode,
                a=refs["a"],  # type: ignore[arg-type]
                b=refs["b"],
                c=refs["c"],
                alpha=data.get("alpha", 0.5),
                blocks=tuple(blocks) if blocks is not None else None,
                text_encoder_alpha=data.get("text_encoder_alpha"),
                vae_alpha=data.get("vae_alpha"),
                dtype=_opt_str(data.get("dtype"), f"{where}.dtype"),
                vae=(
                    InputRef.from_dict(data["vae"], f"{where}.vae", depth=depth, reading=reading)
                    if data.get("vae")
                    else None
                ),
                discard=_opt_str(data.get("discard"), f"{where}.discard"),
                name=_opt_str(data.get("name"), f"{where}.name"),
                loras=tuple(
                    LoraRef.from_dict(item, f"{where}.loras[{i}]", reading=reading)
                    for i, item in enumerate(loras)
                ),
                extra={k: v for k, v in data.items() if k == "output"},
            )
        except MergeError as e:
            raise MergeError(str(e).replace("recipe:", f"{where}:", 1)) from None


def discard_regex(pattern: str) -> re.Pattern[str]:
    """A recipe's `discard` regex, compiled, refused when it could backtrack for long on a
    tensor name (`emaki.safe_regex`)."""
    return bounded_regex(
        pattern, "recipe: discard regex", max_text=MAX_DISCARD_KEY_LENGTH, error=MergeError
    )


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float (`10**400` is not: it has no float)."""
    if not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    """A recipe value for an error message: short scalars as they are, anything else by kind
    (a recipe's value may be a 600 KB list, or nested too deep to print)."""
    if isinstance(value, str | bool | float | None) or (
        isinstance(value, int) and abs(value) < 10**15
    ):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {int: "a very large number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _number(value: float) -> str:
    """`0.8`, `1` (not `1.0`)."""
    return f"{value:g}"


def _opt_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MergeError(f"recipe: {where} must be a string")


def load_recipe(path: str | Path) -> MergeRecipe:
    """A recipe from a `.json` file, or the one embedded in a model merged by emaki."""
    path = Path(path)
    if not path.is_file():
        raise MergeError(f"{path}: no such recipe file")
    if _is_safetensors(path) or path.suffix.lower() == ".safetensors":
        return recipe_from_json(_embedded_recipe_text(path), f"{path}:{RECIPE_METADATA_KEY}")
    with open(path, "rb") as f:
        head = f.read(1)
    if path.suffix.lower() != ".json" and head not in (b"{", b" ", b"\n", b"\t", b"\r", b"\xef"):
        raise MergeError(f"{path}: expected a recipe .json or a .safetensors model merged by emaki")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise MergeError(
            f"{path}: {size} bytes is too big for a merge recipe (at most {MAX_RECIPE_BYTES})"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise MergeError(f"{path}: not a valid recipe JSON file ({e})") from None
    return recipe_from_json(text, str(path))


def recipe_from_json(text: str, where: str) -> MergeRecipe:
    """The recipe in JSON `text` (`where` names it in errors), within the module doc's limits."""
    if len(text) > MAX_RECIPE_BYTES:
        raise MergeError(
            f"{where}: {len(text)} characters is too big for a merge recipe "
            f"(at most {MAX_RECIPE_BYTES})"
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise MergeError(
            f"{where}: the recipe JSON is nested too deep (merges nest at most "
            f"{MAX_RECIPE_DEPTH} deep)"
        ) from None
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
        raise MergeError(f"{where}: not a valid recipe JSON file ({str(e)[:200]})") from None
    return MergeRecipe.from_dict(data, where)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits in the file, then a
    JSON object. Decided before any JSON guess: the length's low byte may be `{` or a space.
    (A JSON file's first 8 bytes, read as that length, are far bigger than the file.)"""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 8 + int(length) <= path.stat().st_size


def _embedded_recipe_text(path: Path) -> str:
    """The `emaki_merge_recipe` metadata of a safetensors model, as written (a JSON string)."""
    from emaki.models.safetensors_header import read_safetensors_header

    try:
        header = read_safetensors_header(path)
    except RecursionError:
        raise MergeError(f"{path}: corrupt safetensors header (JSON nested too deep)") from None
    metadata = header.get("__metadata__")
    text = metadata.get(RECIPE_METADATA_KEY) if isinstance(metadata, dict) else None
    if text is None or text == "":
        raise MergeError(
            f"{path}: the model has no '{RECIPE_METADATA_KEY}' metadata (not merged by emaki)"
        )
    if not isinstance(text, str):
        raise MergeError(
            f"{path}: its '{RECIPE_METADATA_KEY}' metadata is {_shown(text)}, "
            "expected a JSON string (safetensors metadata holds strings only)"
        )
    return text


def save_recipe(recipe: MergeRecipe, path: str | Path, *, output: str | Path | None = None) -> Path:
    """Write `recipe` as indented JSON (with the output path, for information)."""
    data = recipe.to_dict()
    if output is not None:
        data["output"] = str(output)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class InputFacts:
    """What the output's metadata says about one input: name, hashes, its own metadata."""

    name: str
    sha256: str
    legacy_hash: str
    metadata: dict[str, str]


def _parsed(value: str | None) -> Any:
    """An input's A1111 merge metadata, parsed; None when absent, too big or unreadable (it is
    only copied into the output's metadata, which stays small and writable)."""
    if not value or len(value) > MAX_RECIPE_BYTES:
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return parsed if _nesting(parsed) <= 16 else None


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in `value` (iterative: it may be nested very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def merge_metadata(
    recipe: MergeRecipe,
    facts: dict[str, InputFacts],
    *,
    is_inpainting: bool,
    is_instruct_pix2pix: bool,
    architecture: str | None,
) -> dict[str, str]:
    """The output's safetensors metadata: A1111's merge keys plus emaki's recipe (all strings)."""
    a1111_recipe = {
        "type": "webui",
        "primary_model_hash": facts["a"].sha256,
        "secondary_model_hash": facts["b"].sha256 if "b" in facts else None,
        "tertiary_model_hash": facts["c"].sha256 if "c" in facts else None,
        "interp_method": A1111_METHODS[recipe.mode],
        "multiplier": recipe.alpha,
        "save_as_half": recipe.dtype == "fp16",
        "custom_name": recipe.name if recipe.name is not None else recipe.default_name(),
        "config_source": 0,
        "bake_in_vae": Path(recipe.vae.path).name if recipe.vae else "None",
        "discard_weights": recipe.discard or "",
        "is_inpainting": is_inpainting,
        "is_instruct_pix2pix": is_instruct_pix2pix,
    }
    models: dict[str, Any] = {}
    for key in ("a", "b", "c"):
        if key not in facts:
            continue
        fact = facts[key]
        models[fact.sha256] = {
            "name": fact.name,
            "legacy_hash": fact.legacy_hash,
            "sd_merge_recipe": _parsed(fact.metadata.get("sd_merge_recipe")),
        }
        own = _parsed(fact.metadata.get("sd_merge_models"))
        if isinstance(own, dict):
            models.update(own)
    metadata = {
        "format": "pt",
        "sd_merge_recipe": json.dumps(a1111_recipe),
        "sd_merge_models": json.dumps(models),
        RECIPE_METADATA_KEY: recipe.to_json(),
    }
    if architecture is not None:
        metadata["emaki_config"] = architecture
    return metadata

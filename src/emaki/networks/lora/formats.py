"""LoRA/LyCORIS files: reading them, and splitting each key into a module name and a part.

A key names a module of the model and one of its tensors (its *part*). Two spellings occur:

* kohya/LyCORIS: the module name with `_` for `.`, then `.` and the part:
  `lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight`, `lora_te_..._q_proj.alpha`,
  `lora_unet_input_blocks_1_1_proj_in.hada_w1_a` (LDM names occur too);
* PEFT/diffusers: the dotted module path, then a suffix that is translated to the kohya part:
  `unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`
  (`lora_A` → `lora_down.weight`, `lora_B` → `lora_up.weight`; also `.lora.down.weight`,
  `.lora_linear_layer.up.weight`, `.processor.to_q_lora.up.weight`, PEFT's DoRA
  `lora_magnitude_vector`).

`bundle_emb.NAME.string_to_param.*` (or `bundle_emb.NAME`) keys are textual-inversion
embeddings shipped inside the LoRA (A1111 v1.10 `networks.py` `load_network`).

>>> split_key("lora_unet_mid_block_attentions_0_proj_out.lora_up.weight")
('lora_unet_mid_block_attentions_0_proj_out', 'lora_up.weight')
>>> split_key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight")
('text_encoder.text_model.encoder.layers.0.self_attn.q_proj', 'lora_down.weight')
>>> split_key("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight")
('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q', 'lora_up.weight')
>>> split_key("model.diffusion_model.out.0.weight") is None
True
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emaki.errors import ModelLoadError
from emaki.models.convert import unwrap_state_dict
from emaki.models.safe_load import SAFETENSORS, load_pickle, load_tensors, sniff_format
from emaki.models.safetensors_header import header_metadata, read_checked_safetensors_header

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
BUNDLE_PREFIX = "bundle_emb."

# Every part a module's tensors may have, by module type (A1111's `network_*.py`, LyCORIS).
PARTS = frozenset({
    "lora_up.weight", "lora_down.weight", "lora_mid.weight",             # LoRA / LoCon (+ CP mid)
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",  # LoHa
    "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",  # LoKr
    "weight", "on_input",                                                 # IA³
    "diff", "diff_b",                                                     # full weight difference
    "w_norm", "b_norm",                                                   # norm layers
    "oft_blocks", "oft_diag", "rescale",                                  # OFT
    "a1.weight", "a2.weight", "b1.weight", "b2.weight",                   # GLoRA (recognised, not applied)
    "alpha", "scale", "bias", "dora_scale",                               # shared
})

# PEFT/diffusers suffixes → the kohya part they are (longest tried first).
_DOTTED_SUFFIXES: dict[str, str] = {
    ".lora_A.weight": "lora_down.weight",
    ".lora_B.weight": "lora_up.weight",
    ".lora_A.default.weight": "lora_down.weight",
    ".lora_B.default.weight": "lora_up.weight",
    ".lora.down.weight": "lora_down.weight",
    ".lora.up.weight": "lora_up.weight",
    ".lora_linear_layer.down.weight": "lora_down.weight",
    ".lora_linear_layer.up.weight": "lora_up.weight",
    "_lora.down.weight": "lora_down.weight",  # diffusers attention processors: `processor.to_q_lora.down.weight`
    "_lora.up.weight": "lora_up.weight",
    ".lora_magnitude_vector": "dora_scale",
    ".lora_magnitude_vector.weight": "dora_scale",
    ".lora_magnitude_vector.default.weight": "dora_scale",
    **{"." + part: part for part in PARTS if part not in ("weight", "bias", "scale")},
}
_SUFFIX_ORDER = sorted(_DOTTED_SUFFIXES, key=len, reverse=True)
_PEFT_PREFIX = "base_model.model."


def split_key(key: str) -> tuple[str, str] | None:
    """(module name, part) of a key, the part in kohya's spelling; None for an unknown form."""
    head, _, part = key.partition(".")
    if part in PARTS:
        return head, part
    for suffix in _SUFFIX_ORDER:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)].removeprefix(_PEFT_PREFIX), _DOTTED_SUFFIXES[suffix]
    return None


def group_modules(keys: Iterable[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Keys grouped by module: {module: {part: key}}, and the keys of no known form (bundled
    embeddings are neither)."""
    modules: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    for key in keys:
        if key.startswith(BUNDLE_PREFIX):
            continue
        split = split_key(key)
        if split is None:
            unknown.append(key)
        else:
            modules.setdefault(split[0], {})[split[1]] = key
    return modules, unknown


def bundled_embedding_data(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """The embeddings bundled in a LoRA, as payloads for `embedding_from_data`:
    `bundle_emb.NAME.string_to_param.*` → `{"string_to_param": {"*": t}}`,
    `bundle_emb.NAME.clip_l` → `{"clip_l": t}`, a bare `bundle_emb.NAME` → `{NAME: t}`."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith(BUNDLE_PREFIX):
            continue
        name, _, vector = key[len(BUNDLE_PREFIX):].partition(".")
        data = found.setdefault(name, {})
        if vector.startswith("string_to_param."):
            data.setdefault("string_to_param", {})[vector.partition(".")[2]] = value
        else:
            data[vector or name] = value
    return found


def bundled_embedding_names(keys: Iterable[str]) -> list[str]:
    """The names of the embeddings bundled in a file with these keys."""
    return sorted({key[len(BUNDLE_PREFIX):].partition(".")[0] for key in keys if key.startswith(BUNDLE_PREFIX)})


# --- files ---

@dataclass(frozen=True)
class LoraFile:
    """What a LoRA file holds, read without its tensor data: every key's shape and the
    safetensors metadata (kohya's `ss_*`)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]

    @property
    def name(self) -> str:
        """The file stem: what `<lora:NAME>` selects."""
        return self.path.stem

    @property
    def alias(self) -> str:
        """kohya's `ss_output_name` (A1111 accepts it in tags too), else the name."""
        return self.metadata.get("ss_output_name") or self.name


def read_lora_file(path: str | Path) -> LoraFile:
    """Shapes and metadata of a LoRA file: a safetensors header, or a pickle read
    restricted onto the meta device (no tensor data)."""
    path = Path(path)
    if sniff_format(path) == SAFETENSORS:
        header = read_checked_safetensors_header(path)  # shapes that match the data they claim
        shapes = {key: tuple(int(n) for n in entry.get("shape", ()))
                  for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)}
        return LoraFile(path, shapes, header_metadata(header))
    data = _pickled_tensors(load_pickle(path, map_location="meta"), path)
    return LoraFile(path, {key: tuple(value.shape) for key, value in data.items()}, {})


def read_lora_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a LoRA file (pickles through the restricted loader), and its metadata."""
    data, metadata = load_tensors(path)
    return _pickled_tensors(data, Path(path)), metadata


def _pickled_tensors(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    tensors = {str(k): v for k, v in unwrap_state_dict(data).items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path}: no tensors in the file (not a LoRA)")
    return tensors


# --- metadata ---

_METADATA_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10,
                   "ss_tag_frequency": 20}


def parsed_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The metadata as A1111's `/sdapi/v1/loras` returns it: values that are JSON objects
    parsed, the most useful keys first."""
    parsed: dict[str, Any] = {}
    for key, value in sorted(metadata.items(), key=lambda kv: _METADATA_ORDER.get(kv[0], 999)):
        parsed[key] = value
        if value[:1] == "{":
            try:
                parsed[key] = json.loads(value)
            except ValueError:
                pass
    return parsed


def trigger_words(metadata: Mapping[str, str], limit: int = 10) -> list[str]:
    """The most frequent training tags (`ss_tag_frequency`: {folder: {tag: count}}), summed
    over folders, most frequent first."""
    try:
        folders = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except ValueError:
        return []
    counts: Counter[str] = Counter()
    if isinstance(folders, dict):
        for tags in folders.values():
            if isinstance(tags, dict):
                for tag, count in tags.items():
                    if isinstance(count, int | float):
                        counts[str(tag).strip()] += int(count)
    return [tag for tag, _ in counts.most_common(limit) if tag]


def sd_version(metadata: Mapping[str, str], keys: Iterable[str]) -> str:
    """"sd1", "sd2", "sdxl" or "" (unknown), from kohya's metadata, else from the key names."""
    base = metadata.get("ss_base_model_version", "").lower()
    arch = metadata.get("modelspec.architecture", "").lower()
    if base.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if metadata.get("ss_v2") == "True" or base.startswith("sd_v2") or arch.startswith("stable-diffusion-v2"):
        return "sd2"
    if base.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd1"
    names = list(keys)
    if any(k.startswith("lora_te2_") for k in names):
        return "sdxl"
    if any(k.startswith("lora_te_text_model_") for k in names) or metadata:
        return "sd1"
    return ""

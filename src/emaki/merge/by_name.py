"""Merges and LoRA extractions asked for by name, as `emaki merge`, `emaki lora extract`,
`Engine.merge`/`Engine.extract_lora` and the server's merge jobs ask for them.

Everything is checked before anything is opened or written, with errors that name the field
(`models`, `mode`, `loras`, `output`, ...): `plan_merge` and `plan_extraction` do only that, so a
server can refuse a request before queuing it; `run_merge` and `run_extraction` then do the work,
stopping with `Interrupted` (nothing written: the writers write a temporary file) once `cancel`
is set. In a workspace, models are found as generation finds them (a path, a file name or stem in
the model folders, the demo model) or by hash, LoRAs as `<lora:NAME>` finds them, and the output
is a plain file name placed in the checkpoint (merges) or LoRA (extractions) folder.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emaki.errors import EmakiError, Interrupted
from emaki.merge.blocks import UNET_BLOCKS
from emaki.merge.merger import MergeResult, merge
from emaki.merge.recipe import InputRef, LoraRef, MergeError, MergeRecipe
from emaki.models.hashes import HashCache
from emaki.models.resolve import demo_model_path
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.networks.lora.extract import ExtractedLora

DEFAULT_ALPHA = 0.3  # A1111's default multiplier
MAX_MODELS = 3  # A, B and C
MODEL_SUFFIXES = (".safetensors", ".ckpt")
_HASH = re.compile(r"^[0-9a-fA-F]{8,64}$")

#: `progress(done_bytes, total_bytes)` of a merge; `progress(done, total, key)` of an extraction
MergeProgress = Callable[[int, int], None]
ExtractProgress = Callable[[int, int, str], None]
LoraSpec = tuple[str, float, float]  # (name, text-encoder multiplier, UNet multiplier)


def parse_blocks(text: str, field: str = "--blocks") -> tuple[float, ...]:
    """`0,0.1,...` (25 values: IN00-IN11, M00, OUT00-OUT11)."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise MergeError(f"{field}: expected 25 comma-separated numbers, got {text!r}") from None
    return check_blocks(values, field)


def check_blocks(values: Sequence[float], field: str = "blocks") -> tuple[float, ...]:
    if len(values) != len(UNET_BLOCKS):
        raise MergeError(f"{field}: expected {len(UNET_BLOCKS)} values (IN00-IN11, M00, OUT00-OUT11), "
                         f"got {len(values)}")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise MergeError(f"{field}: every block weight must be a finite number")
    return tuple(float(v) for v in values)


def parse_lora(text: str) -> LoraSpec:
    """`NAME[:W]` or `NAME:TE:UNET` → (NAME, TE, UNET); W defaults to 1. NAME may hold colons (a
    Windows path): only trailing numbers are multipliers.

    >>> parse_lora("detail:0.8"), parse_lora("style:0.5:1"), parse_lora("C:/loras/x.safetensors")
    (('detail', 0.8, 0.8), ('style', 0.5, 1.0), ('C:/loras/x.safetensors', 1.0, 1.0))
    """
    parts = text.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 2:
        try:
            numbers.insert(0, float(parts[-1]))
        except ValueError:
            break
        parts.pop()
    name = ":".join(parts)
    if not name:
        raise MergeError(f"--lora {text!r}: expected NAME:W or NAME:TE:UNET")
    te = numbers[0] if numbers else 1.0
    return name, te, numbers[1] if len(numbers) > 1 else te


def find_loras(specs: Iterable[LoraSpec], folders: Sequence[Path], field: str = "loras") -> tuple[LoraRef, ...]:
    """Recipe LoRAs, each name found as a path, a file stem or an `ss_output_name` alias in
    `folders` (as `<lora:NAME>` finds it)."""
    from emaki.networks.lora import LoraLibrary

    library = LoraLibrary()
    refs = []
    for name, te, unet in specs:
        for label, value in (("te", te), ("unet", unet)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise MergeError(f"{field} {name}: {label} must be a finite number, got {value!r}")
        path = library.find(name, folders)
        if path is None:
            raise MergeError(f"{field} {name}: no LoRA file by that name (a path, a file stem or an "
                             f"ss_output_name alias in {', '.join(str(f) for f in folders)})")
        refs.append(LoraRef(str(path), te=float(te), unet=float(unet), name=name))
    return tuple(refs)


def choose_mode(count: int, mode: str | None, field: str = "models") -> str:
    """The mode for `count` models: as asked (checked against the count), else the CLI's
    default (1: no-interpolation, 2: weighted-sum, 3: add-difference)."""
    from emaki.merge.recipe import MODES

    if not 1 <= count <= MAX_MODELS:
        raise MergeError(f"{field}: expected 1 to 3 models (A B [C]), got {count}")
    if mode is None:
        return ("no-interpolation", "weighted-sum", "add-difference")[count - 1]
    if mode not in MODES:
        raise MergeError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    wanted = {"no-interpolation": 1, "weighted-sum": 2, "add-difference": 3}[mode]
    if count != wanted:
        raise MergeError(f"{field}: {mode} takes {wanted} model{'s' if wanted > 1 else ''} "
                         f"({', '.join('ABC'[:wanted])}), got {count}")
    return mode


def build_recipe(paths: Sequence[str | Path], *, mode: str | None = None, alpha: float | None = None,
                 blocks: Sequence[float] | str | None = None, loras: Sequence[LoraRef] = (),
                 te_alpha: float | None = None, vae_alpha: float | None = None, dtype: str | None = None,
                 vae: str | Path | None = None, discard: str | None = None, name: str | None = None,
                 field: str = "models") -> MergeRecipe:
    """The recipe of a new merge of `paths` (A B [C]), every option checked."""
    chosen = choose_mode(len(paths), mode, field)
    if alpha is not None and (not isinstance(alpha, int | float) or not math.isfinite(alpha)):
        raise MergeError(f"alpha: must be a finite number, got {alpha!r}")
    weights = (None if blocks is None else parse_blocks(blocks, "blocks") if isinstance(blocks, str)
               else check_blocks(blocks))
    refs = [InputRef(str(p)) for p in paths]
    return MergeRecipe(
        mode=chosen, a=refs[0], b=refs[1] if len(refs) > 1 else None, c=refs[2] if len(refs) > 2 else None,
        alpha=DEFAULT_ALPHA if alpha is None else float(alpha), blocks=weights, text_encoder_alpha=te_alpha,
        vae_alpha=vae_alpha, dtype=dtype, vae=InputRef(str(vae)) if vae is not None else None,
        discard=discard, name=name, loras=tuple(loras))


def find_checkpoint(name: str | Path, workspace: Workspace, hashes: HashCache, field: str = "models") -> Path:
    """A model file by path, by file name or stem in the workspace's model folders (or the demo
    model), or by the start (8+ hex) of its sha256, A1111's short hash or legacy hash."""
    from emaki.networks import walk_files

    text = str(name)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.name == text and text not in (".", ".."):
        for folder in workspace.model_search:
            for suffix in ("", *MODEL_SUFFIXES):
                candidate = folder / f"{text}{suffix}"
                if candidate.is_file():
                    return candidate
        demo = demo_model_path()
        if text in (demo.stem, demo.name) and demo.is_file():
            return demo
        if _HASH.match(text):
            wanted = text.lower()
            for candidate in walk_files(workspace.folders("checkpoints"), MODEL_SUFFIXES):
                try:
                    found = hashes.get(candidate)
                except (EmakiError, OSError):
                    continue  # an unreadable file is no match
                if found.sha256.startswith(wanted) or found.legacy == wanted:
                    return candidate
    where = ", ".join(str(f) for f in workspace.folders("checkpoints"))
    raise MergeError(f"{field}: no model {text!r} (a path, a file name or hash of a model in {where})")


def output_file(name: str | Path, folder: Path, *, overwrite: bool, field: str = "output") -> Path:
    """`folder/name` for a plain file name (`.safetensors` added when it has no suffix); a path,
    a hidden name, another suffix or an existing file (unless `overwrite`) is refused."""
    text = str(name)
    if not text.strip() or "/" in text or "\\" in text or "\x00" in text or text.startswith(".") \
            or Path(text).is_absolute():
        raise MergeError(f"{field}: {text!r} is not a plain file name (no folders; it is written to {folder})")
    if not Path(text).suffix:
        text += ".safetensors"
    if Path(text).suffix.lower() != ".safetensors":
        raise MergeError(f"{field}: {text!r}: emaki writes .safetensors files; choose a name ending in .safetensors")
    out = folder / text
    if out.exists() and not overwrite:
        raise MergeError(f"{field}: {out} already exists (set overwrite to replace it)")
    return out


def _cancellable(progress: Callable[..., None] | None, cancel: threading.Event | None,
                 out: Path, what: str) -> Callable[..., None] | None:
    """`progress`, raising `Interrupted` first once `cancel` is set."""
    if cancel is None:
        return progress

    def report(*args: object) -> None:
        if cancel.is_set():
            raise Interrupted(f"{out}: {what} interrupted; nothing was written")
        if progress is not None:
            progress(*args)

    return report


# --- merging -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedMerge:
    recipe: MergeRecipe
    out: Path
    overwrite: bool


def plan_merge(workspace: Workspace, hashes: HashCache, models: Sequence[str | Path], *, output: str | Path,
               mode: str | None = None, alpha: float | None = None, blocks: Sequence[float] | str | None = None,
               loras: Iterable[LoraSpec] = (), overwrite: bool = False) -> PlannedMerge:
    """A merge of `models` into the workspace's checkpoint folder, checked (nothing opened)."""
    if isinstance(models, str | Path):
        raise MergeError("models: expected a list of 1 to 3 model names")
    choose_mode(len(models), mode)
    paths = [find_checkpoint(m, workspace, hashes, f"models[{i}]") for i, m in enumerate(models)]
    refs = find_loras(loras, workspace.folders("loras"))
    recipe = build_recipe(paths, mode=mode, alpha=alpha, blocks=blocks, loras=refs)
    out = output_file(output, workspace.folders("checkpoints")[0], overwrite=overwrite)
    if any(p.resolve() == out.resolve() for p in paths):
        raise MergeError(f"output: {out} is one of the merge's models; write the result to a new file")
    return PlannedMerge(recipe, out, overwrite)


def run_merge(recipe: MergeRecipe, out: Path, *, hashes: HashCache, overwrite: bool = False,
              base_dir: Path | None = None, progress: MergeProgress | None = None,
              cancel: threading.Event | None = None) -> MergeResult:
    """`merge`, stopping with `Interrupted` (no file written) once `cancel` is set."""
    return merge(recipe, out, hashes=hashes, base_dir=base_dir, overwrite=overwrite,
                 progress=_cancellable(progress, cancel, out, "merge"))


# --- extracting ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Extraction:
    """An extracted LoRA written to `path`, with how well it fits (`lora.relative_errors`)."""

    path: Path
    lora: ExtractedLora
    model_hash: str


@dataclass(frozen=True)
class PlannedExtraction:
    tuned: Path
    base: Path
    out: Path
    rank: int
    overwrite: bool


def check_rank(rank: object, field: str = "rank") -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 1024:
        raise MergeError(f"{field}: expected a whole number from 1 to 1024, got {rank!r}")
    return rank


def plan_extraction(workspace: Workspace, hashes: HashCache, tuned: str | Path, base: str | Path, *,
                    output: str | Path, rank: int = 32, overwrite: bool = False) -> PlannedExtraction:
    """An extraction of `tuned − base` into the workspace's LoRA folder, checked."""
    return PlannedExtraction(find_checkpoint(tuned, workspace, hashes, "tuned"),
                             find_checkpoint(base, workspace, hashes, "base"),
                             output_file(output, workspace.folders("loras")[0], overwrite=overwrite),
                             check_rank(rank), overwrite)


def run_extraction(tuned: Path, base: Path, out: Path, *, rank: int, conv_rank: int | None = None,
                   device: str = "cpu", threads: int = 1, dtype: str = "fp16",
                   clamp_quantile: float | None = None, min_diff: float | None = None, name: str | None = None,
                   overwrite: bool = False, progress: ExtractProgress | None = None,
                   cancel: threading.Event | None = None) -> Extraction:
    """Extract the kohya LoRA closest to `tuned − base` and write it to `out` (atomically)."""
    import torch

    from emaki.merge.sources import open_source
    from emaki.networks.lora.extract import (
        DTYPES,
        MIN_TEXT_ENCODER_DIFF,
        extract_lora,
        save_extracted_lora,
    )

    if dtype not in DTYPES:
        raise EmakiError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if out.suffix.lower() != ".safetensors":
        raise EmakiError(f"{out}: emaki writes LoRAs as .safetensors; choose a name ending in .safetensors")
    if out.exists() and not overwrite:
        raise EmakiError(f"{out}: already exists (pass --overwrite to replace it)")
    for path in (tuned, base):
        if not path.is_file():
            raise EmakiError(f"{path}: no such file")
    try:
        target = torch.device(device)
    except RuntimeError as e:
        raise EmakiError(f"--device {device!r}: {e}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise EmakiError(f"--device {device}: no CUDA device here (use --device cpu)")
    tuned_source, base_source = open_source(tuned), open_source(base)
    try:
        extracted = extract_lora(
            tuned_source, base_source, rank=rank, conv_rank=conv_rank, device=device, dtype=DTYPES[dtype],
            clamp_quantile=clamp_quantile,
            min_text_encoder_diff=MIN_TEXT_ENCODER_DIFF if min_diff is None else min_diff,
            name=name or out.stem, threads=threads,
            progress=_cancellable(progress, cancel, out, "extraction"))
    finally:
        tuned_source.close()
        base_source.close()
    if cancel is not None and cancel.is_set():
        raise Interrupted(f"{out}: extraction interrupted; nothing was written")
    return Extraction(out, extracted, save_extracted_lora(extracted, out, overwrite=overwrite))

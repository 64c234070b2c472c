"""LoRA files under folders: finding one by name, listing them, loading them once per version.

Files are `*.safetensors`, `*.pt`, `*.ckpt` under the folders, recursively (A1111: `models/Lora`
and `models/LyCORIS`). `<lora:NAME>` selects the file whose stem is NAME, else the one whose
`ss_output_name` is NAME (A1111's alias), else a stem equal ignoring case. Headers, hashes and
loaded tensors are remembered per file until its size or mtime changes.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emaki.errors import EmakiError
from emaki.models.hashes import sha256_file, tensor_data_hash
from emaki.models.safe_load import SAFETENSORS, sniff_format
from emaki.networks.embeddings import Embedding, embedding_from_data
from emaki.networks.library import SkippedFile, file_stamp, walk_files
from emaki.networks.lora.formats import (
    LORA_SUFFIXES,
    LoraFile,
    bundled_embedding_data,
    bundled_embedding_names,
    group_modules,
    parsed_metadata,
    read_lora_file,
    read_lora_tensors,
    sd_version,
    trigger_words,
)
from emaki.networks.lora.modules import NetworkModule, module_type, network_module

if TYPE_CHECKING:
    from emaki.networks.lora.apply import KeptPatches

log = logging.getLogger(__name__)

_KIND_ORDER = ("lora", "locon", "loha", "lokr", "ia3", "full", "oft", "norm", "dora")


@dataclass
class LoraNetwork:
    """A LoRA file loaded for applying: its modules by the name the file gives them (with the
    file's keys of each), the embeddings bundled in it, and the keys of no known form.
    `unmatched` is filled in when it is first applied: the keys that named no module of that
    model (logged once)."""

    file: LoraFile
    modules: dict[str, NetworkModule]
    keys: dict[str, list[str]]
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    unknown_keys: list[str] = field(default_factory=list)
    unmatched: list[str] | None = None


def load_lora(path: str | Path) -> LoraNetwork:
    """Read a LoRA file and build its modules (`emaki.networks.lora.modules`)."""
    path = Path(path)
    tensors, metadata = read_lora_tensors(path)
    file = LoraFile(path, {key: tuple(value.shape) for key, value in tensors.items()}, metadata)
    groups, unknown = group_modules(tensors)
    modules = {name: network_module({part: tensors[key] for part, key in parts.items()}, f"{path}: {name}")
               for name, parts in groups.items()}
    embeddings: dict[str, Embedding] = {}
    for name, payload in bundled_embedding_data(tensors).items():
        try:
            embeddings[name] = embedding_from_data(payload, name, source=f"{path}/{name}")
        except EmakiError as error:
            log.warning("%s: bundled embedding %r skipped: %s", path, name, error)
    return LoraNetwork(file, modules, {name: list(parts.values()) for name, parts in groups.items()},
                       embeddings, unknown)


def file_kind(file: LoraFile) -> tuple[str, int | None, list[str]]:
    """(kind, rank, problems) from a file's key names and shapes: kind "lora", "locon", "loha",
    "lokr", "ia3", "full", "oft", "norm" (joined with "+" when mixed, "+dora" with DoRA
    magnitudes); rank the most common one; problems: modules no type accepts."""
    groups, _unknown = group_modules(file.shapes)
    kinds: set[str] = set()
    ranks: Counter[int] = Counter()
    problems: list[str] = []
    for name, parts in groups.items():
        kind = module_type(parts.keys())
        if kind is None:
            problems.append(f"{name} ({', '.join(sorted(parts))})")
            continue
        shape = {part: file.shapes[key] for part, key in parts.items()}
        label = kind.kind
        if label == "lora" and ("lora_mid.weight" in shape or (len(shape["lora_down.weight"]) == 4
                                                               and shape["lora_down.weight"][-1] > 1)):
            label = "locon"
        kinds.add(label)
        if "dora_scale" in shape:
            kinds.add("dora")
        rank_part = {"lora": "lora_down.weight", "locon": "lora_down.weight", "loha": "hada_w1_b",
                     "oft": "oft_blocks" if "oft_blocks" in shape else "oft_diag",
                     "lokr": "lokr_w2_b" if "lokr_w2_b" in shape else "lokr_w1_b"}.get(label)
        dims = shape.get(rank_part) if rank_part else None
        if dims:
            ranks[dims[0]] += 1
    if "locon" in kinds:
        kinds.discard("lora")  # LoCon is LoRA that also covers the 3x3 convolutions
    rank = max(ranks, key=lambda r: (ranks[r], r)) if ranks else None
    return "+".join(k for k in _KIND_ORDER if k in kinds) or "none", rank, problems


class LoraLibrary:
    """LoRA files by name under folders; headers, hashes and loaded files cached per version
    (the last `capacity` loaded files are kept)."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._headers: dict[Path, tuple[tuple[int, int], LoraFile | SkippedFile]] = {}
        self._hashes: dict[Path, tuple[tuple[int, int], str]] = {}
        self._loaded: OrderedDict[Path, tuple[tuple[int, int], LoraNetwork]] = OrderedDict()
        # Per model (its UNet), the patched weights of the last LoRAs run on it; an entry goes
        # with its model (the weights hold only the UNet's layers, never the UNet itself).
        self.kept: weakref.WeakKeyDictionary[Any, KeptPatches] = weakref.WeakKeyDictionary()

    def header(self, path: Path) -> LoraFile | SkippedFile:
        """The file's shapes and metadata, or why it cannot be read."""
        try:
            stamp = file_stamp(path)
        except EmakiError as e:  # a FIFO, a device, a broken link: never opened, not remembered
            return SkippedFile(path, path.stem, str(e).removeprefix(f"{path}: "))
        cached = self._headers.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        result: LoraFile | SkippedFile
        try:
            result = read_lora_file(path)
        except EmakiError as e:
            result = SkippedFile(path, path.stem, f"unreadable: {e}")
        except Exception as e:  # noqa: BLE001  (a damaged file must not stop a listing)
            result = SkippedFile(path, path.stem, f"unreadable: {type(e).__name__}: {e}")
        self._headers[path] = (stamp, result)
        return result

    def find(self, name: str, folders: Sequence[Path]) -> Path | None:
        """The file `<lora:name>` means: a path, a stem, an `ss_output_name` alias, or a stem
        equal ignoring case (in that order; the first file of the folders wins)."""
        candidate = Path(name).expanduser()
        if candidate.suffix.lower() in LORA_SUFFIXES and candidate.is_file():
            return candidate
        files = walk_files(folders, LORA_SUFFIXES)
        for path in files:
            if path.stem == name:
                return path
        for path in files:
            header = self.header(path)
            if isinstance(header, LoraFile) and header.metadata.get("ss_output_name") == name:
                return path
        for path in files:
            if path.stem.lower() == name.lower():
                return path
        return None

    def hash(self, path: Path) -> str:
        """A1111's LoRA hash (sha256 hex): the `sshs_model_hash` kohya wrote, else the addnet
        hash (the tensor data after the safetensors header), else the whole file's sha256."""
        stamp = file_stamp(path)
        cached = self._hashes.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        header = self.header(path)
        written = header.metadata.get("sshs_model_hash") if isinstance(header, LoraFile) else None
        digest = written or (tensor_data_hash(path) if sniff_format(path) == SAFETENSORS else sha256_file(path))
        self._hashes[path] = (stamp, digest)
        return digest

    def shorthash(self, path: Path) -> str:
        """The 12 hex of `Lora hashes` in the infotext."""
        return self.hash(path)[:12]

    def load(self, path: Path) -> LoraNetwork:
        """The loaded file, read again only when it changed."""
        stamp = file_stamp(path)
        cached = self._loaded.get(path)
        if cached is not None and cached[0] == stamp:
            self._loaded.move_to_end(path)
            return cached[1]
        network = load_lora(path)
        self._loaded[path] = (stamp, network)
        while len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return network

    def rows(self, folders: Sequence[Path]) -> list[dict[str, Any]]:
        """One row per file: what `emaki models` and `/sdapi/v1/loras` show."""
        return [self.row(path) for path in walk_files(folders, LORA_SUFFIXES)]

    def row(self, path: Path) -> dict[str, Any]:
        header = self.header(path)
        row: dict[str, Any] = {"name": path.stem, "alias": path.stem, "path": str(path), "status": "skipped",
                               "reason": None, "kind": None, "rank": None, "base_model": None, "sd_version": None,
                               "trigger_words": [], "hash": None, "modules": 0, "unmatched": 0,
                               "unmatched_keys": [], "embeddings": [], "metadata": {}}
        if isinstance(header, SkippedFile):
            return row | {"reason": header.reason}
        kind, rank, problems = file_kind(header)
        groups, unknown = group_modules(header.shapes)
        unmatched = unknown + [key for name, parts in groups.items() if name not in _reference() for key in parts.values()]
        row |= {"alias": header.alias, "kind": kind, "rank": rank, "modules": len(groups),
                "base_model": header.metadata.get("ss_base_model_version") or header.metadata.get("modelspec.architecture"),
                "sd_version": sd_version(header.metadata, header.shapes), "trigger_words": trigger_words(header.metadata),
                "unmatched": len(unmatched), "unmatched_keys": sorted(unmatched)[:5],
                "embeddings": bundled_embedding_names(header.shapes),
                "metadata": parsed_metadata(header.metadata)}
        if problems:
            return row | {"reason": f"no LoRA module type accepts {problems[0]}"
                                    + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")}
        if not groups:
            return row | {"reason": "no LoRA modules in the file"}
        try:
            row["hash"] = self.shorthash(path)
        except (EmakiError, OSError) as e:
            return row | {"reason": f"unreadable: {e}"}
        return row | {"status": "loaded"}


def _reference() -> Any:
    from emaki.networks.lora.targets import sd15_targets

    return sd15_targets()

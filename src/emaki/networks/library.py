"""Finding embeddings and hypernetworks in folders, and remembering what was loaded.

Embeddings (specs §3.1): every file under the folders, recursively (symlinks followed), by
extension; 0-byte files and `*.preview.*` images are skipped; images without embedding data
are previews, not embeddings. The name is the file stem (an image's stored name wins). One
whose width differs from the text encoder's is kept as *skipped* with the reason, never used.
Hypernetworks (§1.5): `*.pt` under the folders, recursively, looked up by file stem.

A library re-reads only files whose size or mtime changed since the last scan. Only regular
files are opened: a FIFO, a device or a broken link is listed as skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaki.errors import EmakiError, ModelLoadError
from emaki.models.regular_files import regular_file_stat
from emaki.networks.embeddings import (
    EMBEDDING_SUFFIXES,
    IMAGE_SUFFIXES,
    Embedding,
    NotAnEmbedding,
    load_embedding,
)
from emaki.networks.hypernetworks import Hypernetwork, load_hypernetwork
from emaki.prompts.embedding_hook import EmbeddingTable, PromptEmbedding


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not used, and why."""

    path: Path
    name: str
    reason: str


def walk_files(folders: Iterable[Path], suffixes: Sequence[str]) -> list[Path]:
    """Files under `folders` (recursively, links followed) with one of `suffixes`, each folder
    sorted case-insensitively, in folder order.

    Names only: nothing is opened, so a FIFO, a device or a broken link with such a name is listed
    too, and whoever opens it refuses it with the reason (`regular_file_stat`; listings show it as
    skipped). A folder reached again through a link (a loop) is not walked twice.
    """
    found: list[Path] = []
    seen: set[str] = set()
    walked: set[tuple[int, int]] = set()
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        batch = []
        for root, dirs, files in os.walk(folder, followlinks=True):
            try:
                identity = os.stat(root)
            except OSError:
                dirs[:] = []
                continue
            if (identity.st_dev, identity.st_ino) in walked:
                dirs[:] = []  # a link back to a folder already walked
                continue
            walked.add((identity.st_dev, identity.st_ino))
            for file in files:
                path = Path(root) / file
                if path.suffix.lower() in suffixes:
                    batch.append(path)
        for path in sorted(batch, key=lambda p: str(p).lower()):
            key = os.path.realpath(path)  # `Path.resolve` raises on a link loop
            if key not in seen:
                seen.add(key)
                found.append(path)
    return found


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, mtime) of a regular file; `ModelLoadError` with the reason for anything else."""
    stat = regular_file_stat(path)
    return stat.st_size, stat.st_mtime_ns


@dataclass
class EmbeddingScan:
    """The result of scanning for embeddings against one text-encoder width."""

    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)

    def lookup(self, tokenizer: Any) -> EmbeddingTable:
        """An `EmbeddingLookup` for `PromptEncoder` over the loaded embeddings (specs §3.4)."""
        return EmbeddingTable(dict(self.loaded), tokenizer)


def ti_hashes(embeddings: Iterable[PromptEmbedding]) -> str | None:
    """The infotext `TI hashes` value: `"name: shorthash, ..."` (specs §3.1); None if empty.

    Names lose `:` and `,` as in A1111; embeddings without a file hash are left out.
    """
    parts: dict[str, str] = {}
    for embedding in embeddings:
        shorthash = getattr(embedding, "shorthash", None)
        if not shorthash:
            continue
        name = embedding.name.replace(":", "").replace(",", "")
        parts.setdefault(name, f"{name}: {shorthash}")
    return ", ".join(parts.values()) or None


class EmbeddingLibrary:
    """Embeddings found under folders; files are re-read only when they change."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, int], Embedding | SkippedFile | None]] = {}

    def _read(self, path: Path, stamp: tuple[int, int]) -> Embedding | SkippedFile | None:
        cached = self._files.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        result: Embedding | SkippedFile | None
        try:
            result = load_embedding(path)
        except NotAnEmbedding:
            result = None  # a preview picture
        except EmakiError as e:
            result = SkippedFile(path, path.stem, f"unreadable: {e}")
        except Exception as e:  # noqa: BLE001  (a damaged file must not stop the scan)
            result = SkippedFile(path, path.stem, f"unreadable: {type(e).__name__}: {e}")
        self._files[path] = (stamp, result)
        return result

    def scan(self, folders: Iterable[Path], expected_width: int | None = None) -> EmbeddingScan:
        """Load every embedding under `folders`; with `expected_width`, mismatched ones are
        skipped. The first file of a name wins; later ones are skipped as duplicates."""
        scan = EmbeddingScan()
        for path in walk_files(folders, EMBEDDING_SUFFIXES):
            if path.suffix.lower() in IMAGE_SUFFIXES and ".preview." in path.name.lower():
                continue
            try:
                stamp = file_stamp(path)
            except ModelLoadError as e:  # a FIFO, a device, a broken link: listed, never opened
                scan.skipped.append(SkippedFile(path, path.stem, str(e).removeprefix(f"{path}: ")))
                continue
            if stamp[0] == 0:
                continue
            result = self._read(path, stamp)
            if result is None:
                continue
            if isinstance(result, SkippedFile):
                scan.skipped.append(result)
            elif expected_width is not None and result.width != expected_width:
                scan.skipped.append(SkippedFile(
                    path, result.name,
                    f"width {result.width} does not fit this model's text encoder ({expected_width})"
                    + (" (an SDXL embedding)" if result.layout == "sdxl" else ""),
                ))
            elif result.name in scan.loaded:
                scan.skipped.append(SkippedFile(path, result.name,
                                                f"duplicate name: {scan.loaded[result.name].path} is used"))
            else:
                scan.loaded[result.name] = result
        return scan


def find_hypernetwork_file(name: str, folders: Iterable[Path]) -> Path | None:
    """The `.pt` whose stem is `name` under `folders` (exact match first, then ignoring case)."""
    files = walk_files(folders, (".pt",))
    for path in files:
        if path.stem == name:
            return path
    for path in files:
        if path.stem.lower() == name.lower():
            return path
    return None


class HypernetworkLibrary:
    """Hypernetworks by name under folders; each file is loaded once until it changes."""

    def __init__(self) -> None:
        self._loaded: dict[Path, tuple[tuple[int, int], Hypernetwork]] = {}

    def load(self, name: str, folders: Sequence[Path]) -> Hypernetwork:
        """The hypernetwork named `name` (a file stem, or a path)."""
        candidate = Path(name).expanduser()
        # A path names its file even when that is a broken link or a FIFO: opening it says which.
        path = candidate if candidate.suffix and os.path.lexists(candidate) else find_hypernetwork_file(name, folders)
        if path is None:
            where = ", ".join(str(f) for f in folders) or "no folders"
            raise ModelLoadError(f"hypernetwork {name!r}: no such file ({where})")
        stamp = file_stamp(path)
        cached = self._loaded.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            hypernetwork = load_hypernetwork(path)
        except EmakiError:
            raise
        except Exception as e:  # noqa: BLE001  (a damaged file must not stop a listing or a run)
            raise ModelLoadError(f"{path}: unreadable hypernetwork ({type(e).__name__}: {e})") from None
        self._loaded[path] = (stamp, hypernetwork)
        return hypernetwork

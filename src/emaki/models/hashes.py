"""Model file hashes as A1111 and Civitai show them (specs/FORMATS.md §6).

Only regular files are read (`open_regular_file`): hashing a FIFO or `/dev/zero` would never end.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emaki.errors import ModelLoadError
from emaki.files import atomic_write
from emaki.models.regular_files import open_regular_file, regular_file_stat
from emaki.models.safetensors_header import safetensors_data_start

_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Full-file sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_regular_file(path) as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def autov2_hash(path: str | Path) -> str:
    """A1111's "new" shorthash, the `Model hash` of v1.10.1 infotext: sha256[:10]."""
    return sha256_file(path)[:10]


def legacy_hash(path: str | Path) -> str:
    """A1111's old 8-hex model hash: sha256 of the 64 KiB at offset 1 MiB.

    A file shorter than 1 MiB hashes the empty string:

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as f: _ = f.write(b"small")
    >>> legacy_hash(f.name); os.unlink(f.name)
    'e3b0c442'
    """
    with open_regular_file(path) as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def tensor_data_hash(path: str | Path) -> str:
    """sha256 of a safetensors file's tensor data only (kohya/addnet hash; header excluded)."""
    digest = hashlib.sha256()
    with open_regular_file(path) as f:
        f.seek(safetensors_data_start(path))
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileHashes:
    """Every hash A1111 and Civitai show for one file (specs §6)."""

    sha256: str
    legacy: str
    tensor_data: str | None = None  # safetensors only

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


def _tensor_data_start(path: Path) -> int | None:
    """Where a safetensors file's tensor data begins; None for any other file."""
    with open_regular_file(path) as f:
        head = f.read(9)
    if head[8:9] != b"{":
        return None
    try:
        return safetensors_data_start(path)
    except ModelLoadError:
        return None


def file_hashes(path: str | Path, *, tensor_data: bool = True) -> FileHashes:
    """sha256, legacy hash and (for safetensors, if asked) the tensor-data hash, in one read."""
    path = Path(path)
    data_start = _tensor_data_start(path) if tensor_data else None
    whole, data = hashlib.sha256(), hashlib.sha256() if data_start is not None else None
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    position = 0
    with open_regular_file(path) as f:
        while n := f.readinto(buffer):
            block = view[:n]
            whole.update(block)
            if data is not None and data_start is not None and position + n > data_start:
                data.update(block[max(0, data_start - position):])
            position += n
    return FileHashes(sha256=whole.hexdigest(), legacy=legacy_hash(path),
                      tensor_data=data.hexdigest() if data is not None else None)


class HashCache:
    """Hashes remembered per file, valid while its path, size and mtime are unchanged.

    `cache_file` (JSON) keeps them across runs; None keeps them for this process only.
    """

    def __init__(self, cache_file: str | Path | None = None):
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.cache_file is not None and self.cache_file.is_file():
            try:
                loaded = json.loads(self.cache_file.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and isinstance(loaded.get("files"), dict):
                    self._entries = loaded["files"]
            except (OSError, ValueError):
                self._entries = {}  # a damaged cache is only a cache

    def get(self, path: str | Path, *, tensor_data: bool = False) -> FileHashes:
        """The file's hashes, computed (and stored) only when the cache has none valid."""
        stat = regular_file_stat(path)  # names the user's path when it is no regular file
        path = Path(os.path.realpath(path))  # `resolve` raises on a link loop
        key = str(path)
        entry = self._entries.get(key)
        fresh = (isinstance(entry, dict) and entry.get("size") == stat.st_size
                 and entry.get("mtime_ns") == stat.st_mtime_ns)
        if fresh and entry is not None and (not tensor_data or "tensor_data" in entry):
            return FileHashes(entry["sha256"], entry["legacy"], entry.get("tensor_data"))
        hashes = file_hashes(path, tensor_data=tensor_data)
        with self._lock:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                     "sha256": hashes.sha256, "legacy": hashes.legacy}
            if tensor_data:
                entry["tensor_data"] = hashes.tensor_data
            self._entries[key] = entry
            self._save()
        return hashes

    def _save(self) -> None:
        if self.cache_file is None:
            return
        try:
            text = json.dumps({"version": 1, "files": self._entries}, indent=1)
            with atomic_write(self.cache_file) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError:
            pass  # an unwritable cache only costs time

"""Model file hashes as A1111 and Civitai show them (specs/FORMATS.md §6)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Full-file sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
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
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def tensor_data_hash(path: str | Path) -> str:
    """sha256 of a safetensors file's tensor data only (kohya/addnet hash; header excluded)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + header_len)
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()

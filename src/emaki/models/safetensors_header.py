"""The header of a `.safetensors` file, read without touching any tensor data.

The layout: an 8-byte little-endian length n, then n bytes of JSON
`{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`,
then the tensors' bytes (offsets count from the end of the header).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from emaki.errors import ModelLoadError

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Longer headers are refused (the `safetensors` library's own limit)."""


def _header_length(f: BinaryIO, path: str | os.PathLike[str]) -> int:
    """The length prefix at the start of `f`, checked against the size of the file."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes)")
    (length,) = struct.unpack("<Q", head)
    if 8 + length > size:
        raise ModelLoadError(
            f"{path}: truncated safetensors file (header says {length} bytes, file has {size})"
        )
    if length > MAX_HEADER_BYTES:
        raise ModelLoadError(
            f"{path}: corrupt safetensors header (length {length}, more than {MAX_HEADER_BYTES})"
        )
    return int(length)


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header's JSON object: one entry per tensor, plus `__metadata__` if the file has any."""
    with open(path, "rb") as f:
        raw = f.read(_header_length(f, path))
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: corrupt safetensors header (not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(
            f"{path}: corrupt safetensors header (not a JSON object: {type(header).__name__})"
        )
    return header


def safetensors_data_start(path: str | os.PathLike[str]) -> int:
    """Where the tensor data begins: 8 + the header length."""
    with open(path, "rb") as f:
        return 8 + _header_length(f, path)


def header_metadata(header: dict[str, Any]) -> dict[str, str]:
    """The header's `__metadata__` as str → str (a missing or malformed one gives {})."""
    meta = header.get("__metadata__")
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, without reading any tensor."""
    return header_metadata(read_safetensors_header(Path(path)))

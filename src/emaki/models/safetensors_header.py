"""The header of a `.safetensors` file, read without touching any tensor data.

The layout: an 8-byte little-endian length n, then n bytes of JSON
`{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`,
then the tensors' bytes (offsets count from the end of the header).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from emaki.errors import ModelLoadError
from emaki.models.regular_files import open_regular_file

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Longer headers are refused (the `safetensors` library's own limit)."""

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""Bytes per element of each safetensors dtype name."""


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
    with open_regular_file(path) as f:
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
    with open_regular_file(path) as f:
        return 8 + _header_length(f, path)


def header_metadata(header: dict[str, Any]) -> dict[str, str]:
    """The header's `__metadata__` as str → str (a missing or malformed one gives {})."""
    meta = header.get("__metadata__")
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, without reading any tensor."""
    return header_metadata(read_safetensors_header(Path(path)))


def read_checked_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header, every tensor entry checked against the data it claims: a known dtype, a shape
    of non-negative ints whose size × dtype width is exactly its `data_offsets` span, inside the
    file, no two spans overlapping. What a shape-only reader (a LoRA listing) may then trust."""
    with open_regular_file(path) as f:
        length = _header_length(f, path)
        data_size = os.fstat(f.fileno()).st_size - 8 - length
    header = read_safetensors_header(path)
    spans = sorted(_checked_span(path, key, entry, data_size) for key, entry in header.items() if key != "__metadata__")
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise ModelLoadError(f"{path}: corrupt safetensors header: tensors {first!r} and {second!r} overlap")
    return header


def _checked_span(path: str | os.PathLike[str], key: str, entry: Any, data_size: int) -> tuple[int, int, str]:
    def corrupt(why: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: corrupt safetensors header: tensor {key!r} {why}")

    if not isinstance(entry, dict):
        raise corrupt(f"is not an object ({type(entry).__name__})")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise corrupt(f"has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise corrupt(f"has a bad shape {shape!r} (expected a list of sizes)")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise corrupt(f"has bad data_offsets {offsets!r} (expected [begin, end])")
    begin, end = offsets
    needed = math.prod(shape) * DTYPE_BYTES[dtype]
    if needed != end - begin:
        raise corrupt(f"of shape {shape} {dtype} needs {needed} bytes, its data_offsets hold {end - begin}")
    if end > data_size:
        raise corrupt(f"ends at byte {end} of the data, which has {data_size}")
    return begin, end, key

"""Checkpoints opened for streaming: tensor names, dtypes and shapes up front, data on demand.

A source never holds a whole model. `read(key, start, count)` returns elements
`[start, start + count)` of the flattened tensor, read with one positioned read into a buffer the
source reuses, so a result is valid until the next `read` on the same source.

* `.safetensors`: the JSON header is parsed and checked here (shapes of non-negative integers,
  offsets inside the file, sizes matching shapes, no overlaps) before anything is allocated;
  data comes from `os.preadv` at the recorded offsets.
* `.ckpt`/`.pt` (torch zip): the pickle is run through torch's restricted (`weights_only`)
  unpickler with emaki's allowlist and `map_location="meta"`, which builds shape-only tensors
  and records where each storage's bytes lie in the (uncompressed) zip. Data is then read with
  positioned reads like safetensors. Nothing is memory-mapped, so resident memory does not grow
  with the file (a `mmap=True` load would keep every touched page in RSS until the kernel
  evicts it).
* Old (pre-1.6, non-zip) torch pickles interleave pickle and data and cannot be read lazily,
  and zip checkpoints whose tensors are strided views into a shared storage are rare enough
  not to deserve a reader of their own: both are loaded whole with the restricted loader
  (memory = file size). These are the only exceptions.

Sparse tensors are refused (a merge reads dense values), and whatever a loader raises on a broken
file becomes one `ModelLoadError` line naming the file.
"""

from __future__ import annotations

import itertools
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from emaki.errors import EmakiError, ModelLoadError
from emaki.models import safe_load
from emaki.models.convert import normalize_ldm_key, unwrap_state_dict
from emaki.models.safetensors_header import (
    header_metadata,
    read_safetensors_header,
    safetensors_data_start,
)

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}
#: No dimension of a real tensor reaches this (torch sizes are signed 64-bit).
MAX_DIMENSION = 2**48


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class TensorSource(Protocol):
    """What the merger and lineage read: a checkpoint file or a merge computed on the fly."""

    @property
    def label(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...

    def keys(self) -> list[str]: ...
    def info(self, key: str) -> TensorInfo: ...
    def read(self, key: str, start: int, count: int) -> torch.Tensor: ...
    def close(self) -> None: ...


class _Buffer:
    """One growable byte buffer, reused by every read of a source."""

    def __init__(self) -> None:
        self.data = torch.empty(0, dtype=torch.uint8)

    def take(self, nbytes: int) -> torch.Tensor:
        if self.data.numel() < nbytes:
            self.data = torch.empty(nbytes, dtype=torch.uint8)
        return self.data[:nbytes]


def _read_exactly(fd: int, view: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(view):
        n = (
            os.preadv(fd, [view[done:]], offset + done)
            if hasattr(os, "preadv")
            else _pread_into(fd, view[done:], offset + done)
        )
        if n <= 0:
            raise ModelLoadError(
                f"{path}: truncated file (wanted {len(view)} bytes at offset {offset})"
            )
        done += n


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


class _RangeSource:
    """A file whose tensors are contiguous byte ranges: (offset, info) per key."""

    def __init__(
        self, path: Path, entries: dict[str, tuple[int, TensorInfo]], metadata: dict[str, str]
    ):
        self.path = path
        self.label = str(path)
        self.metadata = metadata
        self._entries = entries
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._buffer = _Buffer()

    def keys(self) -> list[str]:
        return list(self._entries)

    def info(self, key: str) -> TensorInfo:
        return self._entries[key][1]

    def read(self, key: str, start: int, count: int) -> torch.Tensor:
        offset, info = self._entries[key]
        size = info.dtype.itemsize
        raw = self._buffer.take(count * size)
        if count:
            _read_exactly(self._fd, memoryview(raw.numpy()), offset + start * size, self.path)  # type: ignore[arg-type]
        return raw.view(info.dtype)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def parse_safetensors_header(
    path: Path,
) -> tuple[dict[str, tuple[int, TensorInfo]], dict[str, str]]:
    """{key: (absolute data offset, info)} and `__metadata__`, checked against the file size."""
    size = path.stat().st_size
    data_start = safetensors_data_start(path)
    header = read_safetensors_header(path)
    metadata = header_metadata(header)
    header.pop("__metadata__", None)
    data_size = size - data_start
    entries: dict[str, tuple[int, TensorInfo]] = {}
    spans = []
    for key, desc in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[desc["dtype"]]
            shape = tuple(_whole(d, MAX_DIMENSION) for d in desc["shape"])
            begin, end = (_whole(x, 2**63 - 1) for x in desc["data_offsets"])
        except KeyError as e:
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: tensor {key!r} lacks or has an unknown {e}"
            ) from None
        except (TypeError, ValueError):
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: bad entry for tensor {key!r} (expected "
                "a known dtype, a shape and two data offsets of non-negative integers)"
            ) from None
        info = TensorInfo(dtype, shape)
        if end - begin != info.nbytes:
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: tensor {key!r} has {end - begin} bytes, "
                f"its shape {list(shape)} and dtype need {info.nbytes}"
            )
        if end > data_size:
            raise ModelLoadError(
                f"{path}: truncated safetensors file: tensor {key!r} ends at byte "
                f"{data_start + end}, "
                f"the file has {size}"
            )
        spans.append((begin, end, key))
        entries[normalize_ldm_key(key)] = (data_start + begin, info)
    spans.sort()
    for (_, end0, k0), (begin1, _, k1) in itertools.pairwise(spans):
        if begin1 < end0:
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: tensors {k0!r} and {k1!r} overlap"
            )
    return entries, metadata


def _whole(value: Any, limit: int) -> int:
    """A JSON integer in [0, limit] (not 1.5, "3" or true), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(value)
    return value


def _check_dense(key: str, value: torch.Tensor, path: Path) -> None:
    if value.layout != torch.strided:
        raise ModelLoadError(
            f"{path}: tensor {key!r} is sparse ({value.layout}); checkpoints hold dense tensors"
        )


def _unwrap(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return unwrap_state_dict(data)


def _torch_zip_entries(path: Path) -> dict[str, tuple[int, TensorInfo]]:
    """Shape-only load through the restricted unpickler; offsets of each tensor's bytes."""
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.infolist():
                if member.compress_type != zipfile.ZIP_STORED:
                    raise ModelLoadError(
                        f"{path}: compressed member {member.filename!r}; torch checkpoints are "
                        "stored uncompressed"
                    )
                if member.filename.endswith("/byteorder") and z.read(member).strip() not in (
                    b"little",
                    b"",
                ):
                    raise ModelLoadError(f"{path}: big-endian checkpoint; not supported")
    except zipfile.BadZipFile as e:
        raise ModelLoadError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    data = safe_load.load_pickle(path, map_location="meta")
    entries: dict[str, tuple[int, TensorInfo]] = {}
    size = path.stat().st_size
    for key, value in _unwrap(data, path).items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        _check_dense(key, value, path)
        storage = value.untyped_storage()
        base = getattr(storage, "_checkpoint_offset", None)
        if base is None:
            raise ModelLoadError(f"{path}: cannot locate the data of tensor {key!r}")
        info = TensorInfo(value.dtype, tuple(value.shape))
        if not value.is_contiguous():
            raise _NonContiguous(key)
        offset = base + value.storage_offset() * value.dtype.itemsize
        if offset + info.nbytes > size:
            raise ModelLoadError(
                f"{path}: truncated checkpoint: tensor {key!r} ends past the end of the file"
            )
        entries[normalize_ldm_key(key)] = (offset, info)
    return entries


class _NonContiguous(Exception):
    pass


class InMemorySource:
    """Tensors already in memory (old-format pickles; tests)."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        label: str = "<memory>",
        metadata: dict[str, str] | None = None,
    ):
        self.label = label
        self.metadata = dict(metadata or {})
        self._tensors = {
            normalize_ldm_key(k): v.contiguous()
            for k, v in tensors.items()
            if isinstance(v, torch.Tensor)
        }

    def keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(t.dtype, tuple(t.shape))

    def read(self, key: str, start: int, count: int) -> torch.Tensor:
        return self._tensors[key].reshape(-1)[start : start + count]

    def close(self) -> None:
        pass


def open_source(path: str | Path) -> TensorSource:
    """Open a checkpoint for streaming; the format is sniffed from its content. A broken file
    is one `ModelLoadError` naming it, whatever the loader underneath raised."""
    path = Path(path)
    try:
        return _open(path)
    except EmakiError:
        raise
    except Exception as e:  # noqa: BLE001 - the boundary where a file's fault becomes one line
        first = (str(e).splitlines() or [""])[0][:200]
        raise ModelLoadError(
            f"{path}: cannot read this checkpoint ({type(e).__name__}: {first})"
        ) from None


def _open(path: Path) -> TensorSource:
    kind = safe_load.sniff_format(path)
    if kind == safe_load.SAFETENSORS:
        entries, metadata = parse_safetensors_header(path)
        return _RangeSource(path, entries, metadata)
    if kind == safe_load.TORCH_ZIP:
        try:
            return _RangeSource(path, _torch_zip_entries(path), {})
        except _NonContiguous:
            pass  # views into shared storages: rare; fall through to a whole load
    tensors = _unwrap(safe_load.load_pickle(path), path)
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor):
            _check_dense(str(key), value, path)
    return InMemorySource(tensors, str(path))

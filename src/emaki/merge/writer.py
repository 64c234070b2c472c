"""Writing a `.safetensors` file incrementally: header first, then tensor data as it is computed.

The format: an 8-byte little-endian header length, a JSON header
`{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}` padded
with spaces to a multiple of 8, then the tensors' bytes back to back in header order. Since every
output tensor's dtype and shape are known before any data is computed, the header is written
first and the data follows in order; nothing is held but the slice being written.

The file is written under a temporary name in the target folder, fsynced and renamed, so an
interrupted run leaves no half-written model behind.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import torch

from emaki.errors import EmakiError
from emaki.merge.sources import DTYPE_NAMES, TensorInfo


def safetensors_header(
    entries: list[tuple[str, TensorInfo]], metadata: dict[str, str], *, min_length: int = 0
) -> bytes:
    """The length-prefixed, space-padded JSON header for `entries` laid out in order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, info in entries:
        header[key] = {
            "dtype": DTYPE_NAMES[info.dtype],
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    length = max(len(text), min_length)
    length += -length % 8
    return struct.pack("<Q", length) + text + b" " * (length - len(text))


class SafetensorsWriter:
    """`with SafetensorsWriter(path, entries, metadata) as w: w.write(t) ...; w.commit()`."""

    def __init__(
        self, path: str | Path, entries: list[tuple[str, TensorInfo]], metadata: dict[str, str]
    ):
        self.path = Path(path)
        self.entries = entries
        self._header = safetensors_header(entries, metadata)
        self._expected = sum(info.nbytes for _, info in entries)
        self._written = 0
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkstemp: its files are private (0600) and the model would stay so after
        # the rename; opened with 0666 the file gets the user's usual permissions (umask).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        while True:
            tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.partial"
            try:
                fd = os.open(tmp, flags, 0o666)
                break
            except FileExistsError:
                continue
        self._tmp = tmp
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._file.write(self._header)
        return self

    def write(self, data: torch.Tensor) -> None:
        """Append the bytes of a contiguous tensor (any dtype) to the data section."""
        assert self._file is not None
        raw = data.reshape(-1).view(torch.uint8)
        view = memoryview(raw.numpy())  # type: ignore[arg-type]
        while view:
            n = self._file.write(view)
            view = view[n:]
        self._written += raw.numel()

    def commit(self, metadata: dict[str, str] | None = None) -> Path:
        """Check the size, (re)write the header with final `metadata`, fsync and rename."""
        assert self._file is not None and self._tmp is not None
        if self._written != self._expected:
            raise EmakiError(
                f"{self.path}: internal error: wrote {self._written} data bytes, "
                f"expected {self._expected}"
            )
        if metadata is not None:
            header = safetensors_header(self.entries, metadata, min_length=len(self._header) - 8)
            if len(header) != len(self._header):
                raise EmakiError(
                    f"{self.path}: internal error: final header does not fit the space reserved"
                )
            self._file.seek(0)
            self._file.write(header)
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        self._tmp = None
        _fsync_folder(self.path.parent)
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op after commit()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open folders; the rename is durable enough there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

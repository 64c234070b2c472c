"""Reading a tensor stored in one floating-point dtype straight into another, through two small
buffers reused for every tensor of a file.

Reading the whole tensor and then casting it (`get_tensor(key).to(dtype)`) first allocates it at
its stored dtype — for a 2 GB checkpoint, 2 GB of fresh pages the kernel must fault in and zero,
only to be freed again — and torch casts between two 16-bit floats (fp16 ↔ bf16) one element at
a time, with no vector path; fp16 → fp32 and fp32 → bf16 are vectorised. So each piece of the
file is read into a cache-sized buffer and, between two 16-bit dtypes, widened to fp32 there
before it is rounded into the result: the same numbers, bit for bit (fp16 → fp32 is exact, and
torch rounds to the nearest even bf16 either way; a NaN stays a NaN, its sign and payload may
differ), measured 2-3x faster for the cast on one thread.

safetensors stores little-endian data; the bytes are taken as they are, so the caller uses this
on little-endian CPUs only (x86, ARM: all that torch ships wheels for but s390x).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from io import BufferedIOBase

import torch

from emaki.errors import ModelLoadError

CHUNK_ELEMENTS = 1 << 15
"""Elements per piece: the buffers (256 KiB, 128 KiB) stay in the CPU's caches, and each cast
stays below torch's grain size for going parallel (32768 elements), so it runs on the calling
thread. Thousands of parallel casts made 2 threads spin-wait for each other on a busy machine:
loading SD 1.5 at bf16 on 2 threads took ~25 s of CPU with pieces of 2^18 elements; 5.2 s with
the whole-tensor casts before, 2.6 s now (docs/performance.md, "Loading a checkpoint")."""


class CastReader:
    """Reads tensors of an open file, each cast to the dtype asked for (`read`)."""

    def __init__(self, file: BufferedIOBase, path: str | os.PathLike[str], chunk_elements: int = CHUNK_ELEMENTS) -> None:
        self._file, self._path, self._chunk = file, os.fspath(path), chunk_elements
        self._bytes = bytearray(chunk_elements * 8)  # room for the widest stored dtype (fp64)
        self._raw = torch.frombuffer(self._bytes, dtype=torch.uint8)
        self._wide = torch.empty(chunk_elements, dtype=torch.float32)

    def read(self, offset: int, shape: Sequence[int], stored: torch.dtype, wanted: torch.dtype) -> torch.Tensor:
        """The tensor whose `stored` bytes begin at `offset` of the file, as a new `wanted` tensor."""
        out = torch.empty(tuple(shape), dtype=wanted)
        flat, width = out.view(-1), stored.itemsize
        through_fp32 = width == 2 and wanted.itemsize == 2  # the two 16-bit floats: no vector path between them
        self._file.seek(offset)
        for start in range(0, flat.numel(), self._chunk):
            count = min(self._chunk, flat.numel() - start)
            self._read_exactly(count * width)
            piece = self._raw[:count * width].view(stored)
            if through_fp32:
                piece = self._wide[:count].copy_(piece)
            flat[start:start + count].copy_(piece)
        return out

    def _read_exactly(self, size: int) -> None:
        view, done = memoryview(self._bytes), 0
        while done < size:
            got = self._file.readinto(view[done:size])
            if not got:  # the header was checked against the file's size: it shrank while being read
                raise ModelLoadError(f"{self._path}: the file ended while its tensors were read (changed on disk?)")
            done += got

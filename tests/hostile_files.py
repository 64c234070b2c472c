"""Hostile and broken files for the hardening tests (issue 16, items 5-8), each a few bytes built
in a test's tmp_path, and a hang guard for code that must not block on them."""

from __future__ import annotations

import io
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

T = TypeVar("T")


def within(seconds: float, fn: Callable[..., T], *args: Any, unblock: Iterable[Path] = (), **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, failing the test if it has not returned after `seconds` (a hang). A reader
    stuck on one of the FIFOs in `unblock` is then released (a writer opens and closes it)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in unblock:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {seconds} s: it hangs")
    if "error" in box:
        raise box["error"]
    return box["value"]


def broken_entries(folder: Path, suffix: str) -> dict[str, Path]:
    """In `folder`: a dangling link, a pair of links pointing at each other, a FIFO and a link
    to /dev/zero, all named `*suffix`; {what: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {name: folder / f"{name}{suffix}" for name in ("dangling", "loop-a", "loop-b", "fifo", "zero")}
    os.symlink(folder / f"missing{suffix}", made["dangling"])
    os.symlink(made["loop-b"], made["loop-a"])
    os.symlink(made["loop-a"], made["loop-b"])
    os.mkfifo(made["fifo"])
    os.symlink("/dev/zero", made["zero"])
    return made


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, chunks: Iterable[tuple[bytes, bytes]] = (), idat: bytes | None = None) -> bytes:
    """An RGB PNG of the declared size, with extra chunks before the pixels; `idat` defaults to
    one black row (so a larger declared size is a truncated file that a decoder still sizes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = idat if idat is not None else zlib.compress(b"\x00" * (1 + 3 * width))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + b"".join(_chunk(k, d) for k, d in chunks)
            + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


def text_chunk(key: str, text: bytes) -> tuple[bytes, bytes]:
    return b"tEXt", key.encode("latin-1") + b"\x00" + text


def ztext_chunk(key: str, text: bytes) -> tuple[bytes, bytes]:
    return b"zTXt", key.encode("latin-1") + b"\x00\x00" + zlib.compress(text, 9)


def rewritten_torch_zip(path: Path, data: Any, patch: Callable[[bytes], bytes]) -> Path:
    """`torch.save(data)` to `path` with `patch` applied to its pickle (`data.pkl`)."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            body = source.read(info.filename)
            out.writestr(info.filename, patch(body) if info.filename.endswith("data.pkl") else body)
    return path


def declare_numel(count: int, numel: int) -> Callable[[bytes], bytes]:
    """A pickle patch: the first storage of `count` elements (a BININT) now declares `numel`."""
    def patch(pickled: bytes) -> bytes:
        old = b"J" + struct.pack("<i", count)
        assert old in pickled
        return pickled.replace(old, b"\x8a\x09" + numel.to_bytes(9, "little", signed=True), 1)

    return patch

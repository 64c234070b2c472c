"""Writing images: PNG with the infotext chunk, atomically, never over an existing file."""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emaki.files import STALE_PARTIAL_S, remove_stale_partials
from emaki.infotext import PARAMETERS_KEY

_NUMBERED = re.compile(r"^(\d{5})-")


def png_info(infotext: str) -> PngInfo:
    """`parameters` as A1111 writes it: tEXt when latin-1 encodable, else uncompressed iTXt."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, infotext)
    return info


def dated_folder(root: Path, today: dt.date | None = None) -> Path:
    return root / (today or dt.date.today()).isoformat()


def next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("*.png") if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def save_png(image: Image.Image, infotext: str, folder: Path, seed: int) -> Path:
    """Save as `<folder>/<nnnnn>-<seed>.png`; the name is claimed with a hard link (no clobber)."""
    return save_numbered_png(image, infotext, folder, lambda: next_number(folder),
                             lambda number: f"{number:05d}-{seed}.png")


def save_png_bytes(png: bytes, folder: Path, seed: int) -> Path:
    """A finished PNG's bytes (made elsewhere: a Ray worker's) saved as `save_png` names it."""
    return claim_new_file(folder, lambda tmp: tmp.write_bytes(png), lambda: next_number(folder),
                          lambda number: f"{number:05d}-{seed}.png")


def save_numbered_png(image: Image.Image, infotext: str, folder: Path, first_number: Callable[[], int],
                      name: Callable[[int], str]) -> Path:
    """Save as `<folder>/<name(n)>` for the first free n from `first_number()` (counted once
    the image is written): the whole file is claimed with a hard link, never over another."""
    return claim_new_file(folder, lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(infotext)),
                          first_number, name)


def claim_new_file(folder: Path, write: Callable[[Path], object], first_number: Callable[[], int],
                   name: Callable[[int], str]) -> Path:
    """`write` a hidden temp file in `folder`, then link it as `<folder>/<name(n)>` for the first
    free n from `first_number()` (counted once the file is whole): never over another file, and
    never a half-written one under a real name."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder, older_than_s=STALE_PARTIAL_S)  # left by a run killed mid-save
    fd, tmp = tempfile.mkstemp(prefix=".emaki-", suffix=".png.tmp", dir=folder)
    os.close(fd)
    try:
        write(Path(tmp))
        number = first_number()
        while True:
            target = folder / name(number)
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                number += 1
    finally:
        Path(tmp).unlink(missing_ok=True)

"""Writing files so that a reader never sees half of one: write a temp file beside the target,
then rename it over the target in one step (POSIX `rename` is atomic within a folder).

A writer killed mid-write (SIGKILL, power loss) leaves its hidden temp entry behind;
`remove_stale_partials` clears those a later writer finds in its folder.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: A temp entry untouched for this long is a killed writer's: a live one writes into it.
STALE_PARTIAL_S = 3600.0
# `atomic_write`'s hidden folder `.<name>.<12 hex>.partial` (holding one file, `<name>`), and
# emaki.merge.writer's temp file `.<name>.<8 hex>.partial`.
_PARTIAL_FOLDER = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.partial")
_PARTIAL_FILE = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.partial")
# emaki.engine.output.save_png's temp image (tempfile.mkstemp's random part).
_IMAGE_TEMP = re.compile(r"\.emaki-[A-Za-z0-9_]+\.png\.tmp")


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp path (not yet created) beside `path`; when the block ends without an error it replaces
    `path`, otherwise it is removed and `path` is left as it was.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temp file keeps the target's name, inside a hidden folder: writers that read the name
    # (PIL's format from the suffix, torch.save's archive name from the stem) write the same
    # bytes as they would to `path`. The writer creates the file: it gets the user's umask.
    folder = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.partial"
    folder.mkdir()
    tmp = folder / target.name
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        folder.rmdir()


def remove_stale_partials(folder: str | os.PathLike[str], *, older_than_s: float) -> list[Path]:
    """Remove the temp entries that writers killed mid-write left in `folder` (not below it):
    `atomic_write`'s folders holding nothing but their one file, and the merge writer's files,
    untouched for more than `older_than_s`, so a writer still at work is never disturbed.
    Symlinks are neither followed nor removed. What cannot be removed stays (a cleanup never
    fails its caller); returns what was removed."""
    cutoff = time.time() - older_than_s
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, not a folder, unreadable
        return []
    removed = []
    for entry in entries:
        try:
            if _remove_if_stale(entry, cutoff):
                removed.append(Path(entry.path))
        except OSError:
            continue  # vanished (another cleanup), or not ours to remove
    return removed


def _remove_if_stale(entry: os.DirEntry[str], cutoff: float) -> bool:
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISREG(info.st_mode) and (_PARTIAL_FILE.fullmatch(entry.name) or _IMAGE_TEMP.fullmatch(entry.name)):
        if info.st_mtime >= cutoff:
            return False
        os.unlink(entry.path)
        return True
    found = _PARTIAL_FOLDER.fullmatch(entry.name)
    if stat.S_ISDIR(info.st_mode) and found:  # S_ISDIR of lstat: never a symlink
        return _remove_partial_folder(Path(entry.path), found["target"], info.st_mtime, cutoff)
    return False


def _remove_partial_folder(path: Path, target: str, mtime: float, cutoff: float) -> bool:
    """Remove `atomic_write`'s folder `path` if it holds at most its file `target` and neither
    changed since `cutoff`. Works through a descriptor opened without following links, so a
    folder swapped for a link meanwhile is not entered (on systems without `O_NOFOLLOW` for
    folders, e.g. Windows, opening fails and nothing is removed)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        inside = os.listdir(fd)
        if any(name != target for name in inside):
            return False  # not what atomic_write leaves
        for name in inside:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) or info.st_mtime >= cutoff:
                return False
        if mtime >= cutoff:
            return False
        for name in inside:
            os.unlink(name, dir_fd=fd)  # a link inside is removed, never followed
    finally:
        os.close(fd)
    os.rmdir(path)
    return True

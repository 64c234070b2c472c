"""Writing files so that a reader never sees half of one: write a temp file beside the target,
then rename it over the target in one step (POSIX `rename` is atomic within a folder)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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

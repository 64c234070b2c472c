"""Opening only regular files: a FIFO, a device (a link to `/dev/zero`), a dangling link or a
link loop in a model folder is refused with the reason, never read (a read would block forever
or never end).

`open_regular_file` opens without blocking (`O_NONBLOCK`: opening a FIFO for reading would wait
for a writer), checks the opened file itself (`fstat`, so a file swapped after a check is still
caught), then reads normally.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat

from emaki.errors import EmakiError, ModelLoadError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _problem(path: str | os.PathLike[str], error: OSError) -> str:
    """Why `path` cannot be opened, in the user's words (after the path and a colon)."""
    if error.errno == errno.ELOOP:
        return "a symbolic link loop, not a file"
    if error.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"a dangling symbolic link (its target {os.readlink(path)} does not exist)"
        return "no such file"
    if error.errno == errno.EISDIR:
        return "is a folder, expected a file"
    return f"cannot be read ({error.strerror or type(error).__name__})"


def _not_regular(path: str | os.PathLike[str], mode: int) -> str:
    return f"{os.fspath(path)}: {_kind(mode)}, not a regular file; only regular files are read"


def regular_file_stat(path: str | os.PathLike[str], error: type[EmakiError] = ModelLoadError) -> os.stat_result:
    """The `stat` of `path` (links followed) if it is a regular file; else `error` with the reason."""
    try:
        result = os.stat(path)
    except OSError as e:
        raise error(f"{os.fspath(path)}: {_problem(path, e)}") from None
    if not stat.S_ISREG(result.st_mode):
        raise error(_not_regular(path, result.st_mode))
    return result


def open_regular_file(path: str | os.PathLike[str], error: type[EmakiError] = ModelLoadError) -> io.BufferedReader:
    """`path` opened for binary reading, if it is a regular file (checked on the opened file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"{os.fspath(path)}: {_problem(path, e)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(_not_regular(path, mode))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise

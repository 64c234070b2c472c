"""What goes wrong under the queue that is not the request's fault: the server cannot write what
it keeps (the job store, the images, the uploads, the settings), most often because its disk is
full. The errors say which (the HTTP status follows: 507 for a full disk, 503 otherwise)."""

from __future__ import annotations

import errno
import sqlite3

from emaki.errors import EmakiError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13  # SQLite's result code for "database or disk is full"


class StorageError(EmakiError):
    """The server could not write what it keeps: a job, its images, an upload, the settings (HTTP 503)."""


class StorageFull(StorageError):
    """... because there is no space left on the disk (HTTP 507 Insufficient Storage)."""


class WorkersUnavailable(EmakiError):
    """The workers that run jobs elsewhere (a Ray cluster's actors) died or are gone: the job's
    worker died twice, or none is left (HTTP 503)."""


def disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, says the disk is full
    (`ENOSPC`/`EDQUOT`, SQLite's SQLITE_FULL)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, StorageFull):
            return True
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(error, sqlite3.Error) and (getattr(error, "sqlite_errorcode", None) == SQLITE_FULL
                                                 or "database or disk is full" in str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def storage_error(what: str, error: BaseException) -> StorageError:
    """`what` could not be written because of `error`: `StorageFull` when the disk is full."""
    if disk_full(error):
        return StorageFull(f"no space left on the server's disk: {what} ({error})")
    return StorageError(f"{what} ({error})")

"""A batch queued on the server (`POST /api/batch`): which generation job makes each item, kept
as `<home>/batches/<name>/batch.json` (rewritten atomically, so a restarted server knows its
batches), with its progress and summary read from the job store.

Posting a batch again under its name keeps every item whose job (by the item's content key, as
`emaki batch` resumes) is done, queued or running, and queues the rest; a repeat of an earlier
item's key in the same post is a duplicate, made once.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emaki.batch.spec import BatchItem
from emaki.batch.summary import Row
from emaki.errors import EmakiError, ParamsError
from emaki.files import atomic_write
from emaki.jobs.store import Job

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a folder name: no separators, no dot first
RECORD_FILE = "batch.json"
LOCK_FILE = ".lock"
KEPT = ("queued", "running", "done")  # an earlier post's job in these states is not queued again
STOPPED = ("cancelled", "interrupted")  # cancelled while queued, or interrupted while running


@dataclass
class RecordedItem:
    line: int  # 1-based: the item's place in `items`, or its line in `jsonl`
    key: str
    job: str | None = None  # the job that makes it; None for a duplicate (or one the server could not queue)
    duplicate_of: int | None = None  # the line of the earlier item with the same key
    earlier: bool = False  # its job was done when this batch was last posted (summary: skipped)


@dataclass
class BatchRecord:
    name: str
    created: float
    posted: float  # the last post: the rate counts the jobs finished since
    items: list[RecordedItem] = field(default_factory=list)


def check_name(name: object) -> str:
    """A batch name: 1-64 letters, digits, `.`, `_`, `-`, not starting with a dot (never a path)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ParamsError(f"name: expected 1-64 letters, digits, '.', '_' or '-' (not starting with '.' "
                          f"or '-'), got {name!r}")
    return name


def batch_folder(home: Path, name: str) -> Path:
    return home / "batches" / check_name(name)


def load_record(home: Path, name: str) -> BatchRecord | None:
    """The batch's record, or None when no batch has that name."""
    path = batch_folder(home, name) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BatchRecord(data["name"], float(data["created"]), float(data["posted"]),
                           [RecordedItem(**item) for item in data["items"]])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EmakiError(f"{path}: not a readable batch record ({e})") from None


def save_record(home: Path, record: BatchRecord) -> None:
    with atomic_write(batch_folder(home, record.name) / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(asdict(record), separators=(",", ":")), encoding="utf-8")


@contextlib.contextmanager
def record_lock(home: Path, name: str) -> Iterator[None]:
    """One post of a batch at a time (two posts at once would queue its items twice)."""
    folder = batch_folder(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; posts of one batch are not expected at once
        yield
        return
    with (folder / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def plan_items(previous: BatchRecord | None, items: Sequence[BatchItem],
               get_job: Callable[[str], Job | None]) -> list[RecordedItem]:
    """A record entry per item: the job an earlier post queued for its key when that job is
    queued, running or done; `job` None (to queue) otherwise, and for a duplicate."""
    earlier = {entry.key: entry.job for entry in previous.items if entry.job} if previous else {}
    first_line: dict[str, int] = {}
    planned = []
    for item in items:
        entry = RecordedItem(item.line, item.key)
        if item.key in first_line:
            entry.duplicate_of = first_line[item.key]
        else:
            first_line[item.key] = item.line
            job = get_job(earlier[item.key]) if item.key in earlier else None
            if job is not None and job.status in KEPT:
                entry.job, entry.earlier = job.id, job.status == "done"
        planned.append(entry)
    return planned


def item_status(entry: RecordedItem, job: Job | None) -> str:
    """done, failed, cancelled, queued, running or duplicate (an item nothing could queue counts
    as failed)."""
    if entry.duplicate_of is not None:
        return "duplicate"
    if job is None:
        return "failed"
    return "cancelled" if job.status in STOPPED else job.status


def progress(record: BatchRecord, get_job: Callable[[str], Job | None], now: float | None = None) -> dict:
    """Counts by status, and the rate over the jobs finished (not cancelled) since the last post
    (None before one has)."""
    now = time.time() if now is None else now
    jobs = {entry.job: get_job(entry.job) for entry in record.items if entry.job}
    counts = dict.fromkeys(("done", "failed", "cancelled", "queued", "running", "duplicate"), 0)
    for entry in record.items:
        counts[item_status(entry, jobs.get(entry.job) if entry.job else None)] += 1
    remaining = counts["queued"] + counts["running"]
    recent = [job for job in jobs.values()  # a cancelled job ends at once: it would inflate the rate
              if job is not None and job.finished is not None and job.finished >= record.posted
              and job.status not in STOPPED]
    rate = None
    if recent:
        start = min(job.started or job.created for job in recent)
        end = now if remaining else max(job.finished or now for job in recent)
        rate = len(recent) / (end - start) if end > start else None
    eta = 0.0 if not remaining else (remaining / rate if rate else None)
    return {"name": record.name, "total": len(record.items), **counts,
            "items_per_s": round(rate, 4) if rate else None, "eta_s": round(eta, 1) if eta is not None else None}


def summary_rows(record: BatchRecord, get_job: Callable[[str], Job | None],
                 files_of: Callable[[str], tuple[str, ...]]) -> list[Row]:
    """The batch as `emaki batch`'s summary.csv rows: `file` the job's gallery images, `skipped`
    an item done by an earlier post, `pending` one still queued or running; a cancelled item is
    `failed`, its `error` saying so (the statuses of `emaki batch`'s file)."""
    rows = []
    for entry in record.items:
        row = Row(entry.line, entry.key)
        job = get_job(entry.job) if entry.job else None
        status = item_status(entry, job)
        if status == "duplicate":
            row.status, row.error = "duplicate", f"same image as line {entry.duplicate_of}"
        elif job is None:
            row.status = "failed"
            row.error = (f"job {entry.job} is no longer in the queue" if entry.job
                         else "the server could not queue it; post the batch again")
        else:
            row.status = {"done": "skipped" if entry.earlier else "done", "failed": "failed",
                          "cancelled": "failed"}.get(status, "pending")
            row.attempts = job.attempts
            if job.started is not None and job.finished is not None:
                row.seconds = job.finished - job.started
            if row.status == "failed":
                row.error = job.error or job.status
            if status == "done":
                row.files = files_of(job.id)
        rows.append(row)
    return rows

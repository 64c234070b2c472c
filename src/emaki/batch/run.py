"""One resumable batch: every item of a batch file run once on an executor, its images written by
this process alone (atomically), a summary kept as it goes.

An item is done when all its files are in the output folder and complete (a PNG ends with its
IEND chunk; files are only ever renamed into place whole, so a killed run leaves none half
written); a rerun skips those and runs the rest. Results may come back in any order (a Ray
cluster runs several at once); each is written as it arrives.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from emaki.batch.spec import BatchItem
from emaki.batch.summary import Row, read_summary, write_summary
from emaki.errors import EmakiError
from emaki.files import atomic_write, remove_stale_partials
from emaki.jobs.faults import disk_full
from emaki.jobs.rendered import PNG_END, EngineSlot, JobOutcome, JobRequest

LOCK_FILE = ".emaki-batch.lock"
SUMMARY_EVERY_S = 1.0  # the summary is rewritten at most this often (and at the end)


class BatchIncomplete(EmakiError):
    """Some items of the batch failed (the summary says which and why)."""

    exit_code = 1


class BatchExecutor(Protocol):
    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        """Run every request once; yield each outcome as it ends, in any order."""
        ...

    def close(self) -> None:
        """Let go of the workers (a Ray cluster's actors); the executor is not used again."""
        ...


class LocalBatchExecutor:
    """Runs the requests one after another on an engine in this process."""

    def __init__(self, slot: EngineSlot) -> None:
        self.slot = slot

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        for request in requests:
            yield self.slot.render(request.key, request.params.model_dump())

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class BatchReport:
    folder: Path
    rows: list[Row]

    @property
    def counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)


def output_names(item: BatchItem) -> tuple[str, ...]:
    """`<key>.png`, or `<key>-00.png`, `<key>-01.png`, ... for an item of several images."""
    if item.images == 1:
        return (f"{item.key}.png",)
    return tuple(f"{item.key}-{index:02d}.png" for index in range(item.images))


def complete_png(path: Path) -> bool:
    """Whether `path` is a whole PNG: it ends with the IEND chunk (a cut file does not)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < len(PNG_END) + 8:
                return False
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except OSError:
        return False


def item_done(folder: Path, item: BatchItem) -> bool:
    return all(complete_png(folder / name) for name in output_names(item))


@contextlib.contextmanager
def batch_lock(folder: Path) -> Iterator[None]:
    """Hold the output folder for this run: a second `emaki batch` on it is refused, and what a
    killed run left half written (hidden temp entries) can be cleared at once."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; temp entries are cleared once stale
        remove_stale_partials(folder, older_than_s=3600)
        yield
        return
    with (folder / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmakiError(f"{folder}: another emaki batch is writing to this folder") from None
        remove_stale_partials(folder, older_than_s=0)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def earlier_rows(folder: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier run's summary by key (empty when there is none, or it is unreadable)."""
    try:
        return {row["key"]: row for row in read_summary(folder) if row.get("key")}
    except (OSError, ValueError, csv.Error, KeyError):
        return {}


def skipped_row(item: BatchItem, earlier: dict[str, str] | None) -> Row:
    """The row of an item done by an earlier run, with that run's time and attempts when its summary has them."""
    row = Row(item.line, item.key, "skipped", files=output_names(item))
    if earlier and earlier.get("status") in ("done", "skipped"):
        with contextlib.suppress(ValueError):
            row.seconds = float(earlier["seconds"]) if earlier.get("seconds") else None
            row.attempts = int(earlier["attempts"]) if earlier.get("attempts") else 0
            row.error = earlier.get("error") or ""
    return row


def plan_rows(folder: Path, items: Sequence[BatchItem]) -> tuple[list[Row], list[BatchItem]]:
    """A row per item, and the items to run: not those already done, nor a repeat of an
    earlier line's key (the same params and seed: the same image)."""
    rows: list[Row] = []
    to_run: list[BatchItem] = []
    first_line: dict[str, int] = {}
    earlier = earlier_rows(folder)
    for item in items:
        row = Row(item.line, item.key, files=output_names(item))
        if item.key in first_line:
            row.status, row.error = "duplicate", f"same image as line {first_line[item.key]}"
        elif item_done(folder, item):
            row = skipped_row(item, earlier.get(item.key))
        else:
            to_run.append(item)
        first_line.setdefault(item.key, item.line)
        rows.append(row)
    return rows, to_run


def write_images(folder: Path, item: BatchItem, outcome: JobOutcome) -> None:
    """Write the outcome's PNGs under the item's names, each renamed into place whole."""
    names = output_names(item)
    if len(outcome.images) != len(names):
        raise EmakiError(f"the worker returned {len(outcome.images)} images, expected {len(names)}")
    for name, image in zip(names, outcome.images):
        if not image.png.endswith(PNG_END):
            raise EmakiError(f"the worker returned a cut PNG for {name}")
        with atomic_write(folder / name) as tmp:
            tmp.write_bytes(image.png)


def record(folder: Path, item: BatchItem, row: Row, outcome: JobOutcome) -> None:
    """Write `outcome`'s images (when it has them) and say in `row` how the item ended."""
    row.attempts = outcome.attempts
    row.seconds = outcome.facts.get("seconds")
    error = outcome.error
    if error is None:
        try:
            write_images(folder, item, outcome)
        except OSError as e:
            error = f"could not write the images to {folder}: {e.strerror or e}"
            if disk_full(e):  # every item after it would be made for nothing
                row.status, row.error = "failed", error
                raise EmakiError(f"{folder}: no space left on the disk; stopped (rerun to go on once there "
                                 "is room: what is done is kept)") from None
        except EmakiError as e:
            error = str(e)
    if error is None:
        row.status, row.error = "done", f"retried: {outcome.retried}" if outcome.retried else ""
    else:
        row.status = "failed"
        row.error = f"{error} (first attempt: {outcome.retried})" if outcome.retried else error


def run_batch(items: Sequence[BatchItem], folder: Path, executor: BatchExecutor, *,
              on_plan: Callable[[int, int], None] | None = None, on_row: Callable[[Row], None] | None = None,
              summary_every_s: float = SUMMARY_EVERY_S) -> BatchReport:
    """Run the items not yet done in `folder` on `executor`. `on_plan(to_run, already_done)` is
    called once before the first job, `on_row(row)` as each item ends. The summary is written
    before the first job, every `summary_every_s` after, and at the end — also when the run is
    stopped (Ctrl-C, an error)."""
    with batch_lock(folder):
        rows, to_run = plan_rows(folder, items)
        by_line = {row.line: row for row in rows}
        by_key = {item.key: item for item in to_run}
        write_summary(folder, rows)
        if on_plan is not None:
            on_plan(len(to_run), sum(row.status == "skipped" for row in rows))
        written = time.monotonic()
        try:
            for outcome in executor.outcomes([item.request() for item in to_run]):
                item = by_key[outcome.key]
                row = by_line[item.line]
                record(folder, item, row, outcome)
                if on_row is not None:
                    on_row(row)
                if time.monotonic() - written >= summary_every_s:
                    write_summary(folder, rows)
                    written = time.monotonic()
        finally:
            try:
                write_summary(folder, rows)
            except OSError as e:
                raise EmakiError(f"could not write {folder / 'summary.csv'}: {e.strerror or e}") from None
    return BatchReport(folder, rows)

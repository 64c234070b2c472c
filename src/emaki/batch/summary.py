"""The batch's `summary.csv`: one row per line of the batch file, rewritten atomically as the
run goes, so a killed run leaves a valid summary of what it had done."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from emaki.files import atomic_write

SUMMARY_FILE = "summary.csv"
COLUMNS = ("line", "key", "status", "seconds", "file", "error", "attempts")
# done: made by this run; skipped: its files were there from an earlier run; duplicate: the same
# image as an earlier line (`error` names it); failed: `error` says why; pending: not reached.
STATUSES = ("done", "skipped", "duplicate", "failed", "pending")


@dataclass
class Row:
    line: int
    key: str
    status: str = "pending"
    seconds: float | None = None
    files: tuple[str, ...] = ()  # names inside the output folder
    error: str = ""
    attempts: int = 0

    def cells(self) -> list[str]:
        seconds = f"{self.seconds:.3f}" if self.seconds is not None else ""
        return [str(self.line), self.key, self.status, seconds, ";".join(self.files), self.error,
                str(self.attempts) if self.attempts else ""]


def write_summary(folder: Path, rows: list[Row]) -> Path:
    """Replace `folder/summary.csv` with `rows` (in line order) in one step."""
    target = folder / SUMMARY_FILE
    with atomic_write(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        write_rows(f, rows)
    return target


def summary_csv(rows: list[Row]) -> str:
    """`rows` as the text of a summary.csv (what `GET /api/batch/{name}/summary.csv` answers)."""
    text = io.StringIO(newline="")
    write_rows(text, rows)
    return text.getvalue()


def write_rows(f: TextIO, rows: list[Row]) -> None:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    writer.writerows(row.cells() for row in sorted(rows, key=lambda r: r.line))


def read_summary(folder: Path) -> list[dict[str, str]]:
    """The rows of `folder/summary.csv` as dicts (for tests and tools)."""
    with (folder / SUMMARY_FILE).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

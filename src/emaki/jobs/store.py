"""The job queue and the gallery, in one SQLite file (WAL mode) under `EMAKI_HOME`.

A job is a generation (`kind` 'generate': `params` holds `GenerationParams`), a training run
('train': `params` holds `TrainingParams`, `result` its `TrainingOutcome`), an X/Y/Z plot
('grid': `params` holds `{"params": GenerationParams, "spec": GridSpec}`), A1111's SD upscale
script ('sd-upscale': `GenerationParams` plus `sd_upscale`: upscaler, scale, overlap), or a merge
or LoRA extraction, or a lineage trace ('merge', 'extract-lora', 'lineage': `emaki.jobs.file_jobs`). It moves queued →
running → done | failed | cancelled | interrupted. The worker claims the
oldest queued job in one transaction, so each job runs once however many clients submit at
the same time. Images are written to disk (atomically) before the transaction that records
them commits, so a gallery row never points at a missing file.

After a crash, a job found `running` is put back in the queue once (`attempts` counts the
claims) and failed the second time, so one poisonous job cannot crash the server forever.
Jobs whose images go back to a waiting HTTP client only (A1111 `save_images: false`) are
cancelled instead: nobody is left to receive them. A training job that runs again goes on from
its last save (the worker sets `resume`).

Databases written before job kinds existed get the `kind` column (every old job a generation)
when they are opened; one whose `kind` CHECK predates a kind has its `jobs` table rebuilt.

A write SQLite refuses (a full disk, a read-only or broken file) is rolled back and raised as
`StorageError` (`StorageFull` for a full disk); the store remembers it until a write succeeds
(`faults`). A job whose end cannot be written at all is kept ended in memory (`keep_failure`):
reads show it ended, and the next write that can (taking the next job) records it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emaki.errors import ParamsError
from emaki.jobs.faults import storage_error

JOB_KINDS = ("generate", "train", "grid", "merge", "extract-lora", "sd-upscale", "lineage")
KIND_CHECK = "CHECK (kind IN (" + ", ".join(f"'{kind}'" for kind in JOB_KINDS) + "))"
JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    kind TEXT NOT NULL DEFAULT 'generate' {kind_check},
    params TEXT NOT NULL,
    keep INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    note TEXT,
    result TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
"""
JOBS_INDEX = "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);"
SCHEMA = JOBS_TABLE.format(name="jobs", kind_check=KIND_CHECK) + JOBS_INDEX + """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    path TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL,
    model TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    infotext TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_created ON images (created);
CREATE INDEX IF NOT EXISTS images_job ON images (job_id);
"""

# Added to `jobs` after its first release: (column, its definition for ALTER TABLE).
ADDED_COLUMNS = (("kind", f"TEXT NOT NULL DEFAULT 'generate' {KIND_CHECK}"),)
MAX_ATTEMPTS = 2  # the first run, and one retry after a crash
FINISHED = ("done", "failed", "cancelled", "interrupted")
SQLITE_INTEGER = range(-(2**63), 2**63)  # what an INTEGER column (and a bound parameter) can hold


@dataclass(frozen=True)
class Job:
    id: str
    seq: int
    status: str
    params: dict[str, Any]
    keep: bool
    attempts: int
    error: str | None
    note: str | None
    result: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None
    kind: str = "generate"  # "generate" | "train" | "grid" | "merge" | "extract-lora" | "sd-upscale" | "lineage"

    def public(self) -> dict[str, Any]:
        """What the native API returns for a job (it adds the job's gallery images); a training
        job's `result` is its `TrainingOutcome` (the trained file, the loss log, ...), a grid job's
        its summary."""
        view = {
            "id": self.id, "kind": self.kind, "status": self.status, "params": self.params, "error": self.error,
            "note": self.note, "attempts": self.attempts, "created": self.created, "started": self.started,
            "finished": self.finished,
        }
        # a grid's result: its infotexts (grid first), seeds, cells made; a merge's: the file it made;
        # a lineage's: the estimate per block and its summary
        if self.kind in ("train", "grid", "merge", "extract-lora", "lineage"):
            view["result"] = self.result
        return view


@dataclass(frozen=True)
class ImageRecord:
    """One gallery row; `path` is where the PNG (with its infotext) lies."""

    path: Path
    seed: int
    prompt: str
    negative_prompt: str
    model: str
    width: int
    height: int
    infotext: str


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no spelling for them (a NaN in a job's
    params, stored by an older emaki, would break every client that reads the job)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(finite(value), allow_nan=False)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], seq=row["seq"], status=row["status"], params=finite(json.loads(row["params"])),
        keep=bool(row["keep"]), attempts=row["attempts"], error=row["error"], note=row["note"],
        result=finite(json.loads(row["result"])) if row["result"] else None, created=row["created"],
        started=row["started"], finished=row["finished"], kind=row["kind"],
    )


def _image(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118  (iterating a Row gives values)


@dataclass(frozen=True)
class KeptEnd:
    """How a job ended, held in memory because the database could not take it."""

    status: str
    error: str
    result: dict[str, Any] | None
    finished: float


class JobStore:
    """Thread-safe access to the database; one connection, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self.on_finish: list[Callable[[str], None]] = []  # called with the job id after it ends
        # Called with the job id before its end is recorded, so before anyone can see it ended:
        # what must be true when a client sees a job done (a listing that shows the file it wrote).
        self.before_finish: list[Callable[[str], None]] = []
        self._write_error: str | None = None  # why the latest write failed (None once one succeeds)
        self._kept: dict[str, KeptEnd] = {}  # job id -> its end, not yet written

    def _migrate(self) -> None:
        """Add the columns a database from an older emaki lacks (their defaults fill old rows),
        then widen an older `kind` CHECK to today's kinds."""
        with self._lock:
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, definition in ADDED_COLUMNS:
                if column not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
            table = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
            if KIND_CHECK not in table["sql"]:
                self._rebuild_jobs()

    def _rebuild_jobs(self) -> None:
        """SQLite cannot change a CHECK in place: copy `jobs` into a table defined as today's and
        put it in the old one's place, all in one transaction (SQLite's documented way to alter
        a table: a failure leaves the old table as it was). Rows keep their `seq`, so the queue's
        order and the gallery's `job_id`s stay."""
        columns = ", ".join(row["name"] for row in self._db.execute("PRAGMA table_info(jobs)"))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DROP TABLE IF EXISTS jobs_rebuilt")
            self._db.execute(JOBS_TABLE.format(name="jobs_rebuilt", kind_check=KIND_CHECK))
            self._db.execute(f"INSERT INTO jobs_rebuilt ({columns}) SELECT {columns} FROM jobs")
            self._db.execute("DROP TABLE jobs")
            self._db.execute("ALTER TABLE jobs_rebuilt RENAME TO jobs")
            self._db.execute(JOBS_INDEX)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _finished(self, job_id: str) -> None:
        for callback in self.on_finish:
            callback(job_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._writing(doing) as db:
            yield db

    @contextmanager
    def _writing(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; the caller holds the lock. SQLite refusing it (at any
        statement or at the commit) rolls it back and raises `StorageError` saying what failed."""
        changes = self._db.total_changes
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as e:
            error = storage_error(f"the job store ({self.path}) could not {doing}", e)
            self._write_error = str(error)
            raise error from e
        if self._db.total_changes != changes:  # a write went through: the store can write again
            self._write_error = None
        self._changed.notify_all()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (it does on a full disk): then there is nothing to undo.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # --- the queue ---

    def submit(self, params: dict[str, Any], *, keep: bool = True, kind: str = "generate") -> Job:
        """Queue a job of `kind` ('generate': `GenerationParams` fields; 'train': `TrainingParams`;
        'grid': `{"params": GenerationParams fields, "spec": GridSpec fields}`)."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
        job_id = uuid.uuid4().hex
        with self._transaction("queue the job") as db:
            db.execute("INSERT INTO jobs (id, status, kind, params, keep, created) VALUES (?, 'queued', ?, ?, ?, ?)",
                       (job_id, kind, _json(params), int(keep), time.time()))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def recover(self) -> dict[str, int]:
        """At start-up: requeue (once) the jobs a crash left running; cancel client-only jobs."""
        now = time.time()
        with self._transaction("recover the jobs a stop left running") as db:
            orphans = db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ?, error = 'the server restarted while the "
                "HTTP client that asked for this job was waiting' WHERE keep = 0 AND status IN ('queued', 'running')",
                (now,)).rowcount
            failed = db.execute(
                "UPDATE jobs SET status = 'failed', finished = ?, error = 'the server stopped while this job ran, "
                "twice; not retried again' WHERE status = 'running' AND attempts >= ?", (now, MAX_ATTEMPTS)).rowcount
            retried = db.execute(
                "UPDATE jobs SET status = 'queued', note = 'interrupted by a server stop; retried' "
                "WHERE status = 'running'").rowcount
        return {"retried": retried, "failed": failed, "cancelled": orphans}

    def claim_next(self, timeout: float | None = None) -> Job | None:
        """The oldest queued job, now `running`; waits up to `timeout` s for one (None: forever).
        Job ends kept in memory are written first, in the same transaction."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                with self._writing("take the next job") as db:
                    self._write_kept(db)
                    row = db.execute("SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                    if row is not None:
                        db.execute("UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 "
                                   "WHERE seq = ?", (time.time(), row["seq"]))
                        job = db.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone()
                self._kept.clear()
                if row is not None:
                    return _job(job)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def _write_kept(self, db: sqlite3.Connection) -> None:
        for job_id, end in self._kept.items():
            db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ? "
                       "WHERE id = ? AND status IN ('queued', 'running')",
                       (end.status, _json(end.result) if end.result is not None else None, end.error,
                        end.finished, job_id))

    def finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
               error: str | None = None, images: Sequence[ImageRecord] = (), note: str | None = None) -> None:
        """Record how a job ended, with its gallery rows, in one transaction; `note` (e.g. that a
        worker died and the job was retried) replaces the job's note when given."""
        assert status in FINISHED
        for callback in self.before_finish:
            callback(job_id)
        now = time.time()
        with self._transaction("record the job's end") as db:
            for image in images:
                db.execute(
                    "INSERT INTO images (job_id, path, seed, prompt, negative_prompt, model, width, height, "
                    "infotext, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, str(image.path), image.seed, image.prompt, image.negative_prompt, image.model,
                     image.width, image.height, image.infotext, now))
            db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ?, note = COALESCE(?, note) "
                       "WHERE id = ?", (status, _json(result) if result is not None else None, error, now, note, job_id))
        self._finished(job_id)

    def keep_failure(self, job_id: str, error: str, result: dict[str, Any] | None = None) -> None:
        """The job failed and not even that could be written: hold its end in memory (reads show
        it, `faults` reports it) until `claim_next` can write it."""
        with self._lock:
            self._kept[job_id] = KeptEnd("failed", error, result, time.time())
            self._changed.notify_all()
        self._finished(job_id)

    def faults(self) -> list[str]:
        """What keeps the store from recording jobs: the latest failed write, the job ends held
        in memory."""
        with self._lock:
            found = [self._write_error] if self._write_error else []
            return found + [f"job {job_id} failed and its end could not be recorded: {end.error}"
                            for job_id, end in self._kept.items()]

    def _seen(self, job: Job) -> Job:
        """The job as it is: its end from memory when the database could not take it (lock held)."""
        end = self._kept.get(job.id)
        if end is None or job.status in FINISHED:
            return job
        return replace(job, status=end.status, error=end.error, result=end.result, finished=end.finished)

    def requeue(self, job_id: str, note: str | None, *, ran: bool = True) -> None:
        """Put a running job back at its place in the queue, `note` (None: the note stays) saying
        why: a job stopped by a server stop runs again (a training run goes on from its last
        save) at the next start. `ran=False`: taken as the server stopped, never started, so the
        claim is not counted in `attempts`."""
        with self._transaction("requeue the job") as db:
            db.execute("UPDATE jobs SET status = 'queued', note = COALESCE(?, note), attempts = attempts - ? "
                       "WHERE id = ? AND status = 'running'", (note, 0 if ran else 1, job_id))

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False when it is not queued (running jobs are interrupted instead)."""
        with self._transaction("cancel the job") as db:
            cancelled = db.execute("UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                                   (time.time(), job_id)).rowcount == 1
        if cancelled:
            self._finished(job_id)
        return cancelled

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return self._seen(_job(row)) if row is not None else None

    def jobs(self, status: str | None = None, limit: int = 100) -> list[Job]:
        with self._lock:
            if status:
                rows = self._db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq LIMIT ?",
                                        (status, limit)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
            jobs = [self._seen(_job(r)) for r in rows]
        return [job for job in jobs if not status or job.status == status]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
            counts = {r["status"]: r["n"] for r in rows}
            for job_id in self._kept:  # ended in memory: counted as ended
                row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row["status"] not in FINISHED:
                    counts[row["status"]] -= 1
                    counts["failed"] = counts.get("failed", 0) + 1
        return {status: n for status, n in counts.items() if n}

    # --- the gallery ---

    def gallery(self, *, text: str | None = None, model: str | None = None, since: float | None = None,
                until: float | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; `text` matches the prompt, negative prompt, model or infotext
        (case-insensitive substring)."""
        for name, number in (("limit", limit), ("offset", offset)):
            if number not in SQLITE_INTEGER:
                raise ParamsError(f"{name}: expected a 64-bit integer, got {number}")
        where: list[str] = []
        args: list[Any] = []
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            columns = ("prompt", "negative_prompt", "model", "infotext")
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")")
            args += [f"%{escaped}%"] * len(columns)
        if model:
            where.append("model = ?")
            args.append(model)
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if until is not None:
            where.append("created < ?")
            args.append(until)
        sql = "SELECT * FROM images" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit, offset)).fetchall()
        return [_image(r) for r in rows]

    def image(self, image_id: int) -> dict[str, Any] | None:
        if image_id not in SQLITE_INTEGER:  # no such row; SQLite could not even be asked
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return _image(row) if row is not None else None

    def delete_image(self, image_id: int) -> dict[str, Any] | None:
        """Remove one gallery row; returns it (the caller removes its file), None when unknown."""
        if image_id not in SQLITE_INTEGER:
            return None
        with self._transaction("delete the image") as db:
            row = db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        return _image(row) if row is not None else None

    def images_of(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM images WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [_image(r) for r in rows]

"""The job queue and the gallery, in one SQLite file (WAL mode) under `EMAKI_HOME`.

A job is a generation (`kind` 'generate': `params` holds `GenerationParams`) or a training run
('train': `params` holds `TrainingParams`, `result` its `TrainingOutcome`). It moves queued →
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
when they are opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    kind TEXT NOT NULL DEFAULT 'generate' CHECK (kind IN ('generate', 'train')),
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
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
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
ADDED_COLUMNS = (("kind", "TEXT NOT NULL DEFAULT 'generate' CHECK (kind IN ('generate', 'train'))"),)
JOB_KINDS = ("generate", "train")
MAX_ATTEMPTS = 2  # the first run, and one retry after a crash
FINISHED = ("done", "failed", "cancelled", "interrupted")


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
    kind: str = "generate"  # "generate" | "train"

    def public(self) -> dict[str, Any]:
        """What the native API returns for a job (it adds the job's gallery images); a training
        job's `result` is its `TrainingOutcome` (the trained file, the loss log, ...)."""
        view = {
            "id": self.id, "kind": self.kind, "status": self.status, "params": self.params, "error": self.error,
            "note": self.note, "attempts": self.attempts, "created": self.created, "started": self.started,
            "finished": self.finished,
        }
        if self.kind == "train":
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


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], seq=row["seq"], status=row["status"], params=json.loads(row["params"]),
        keep=bool(row["keep"]), attempts=row["attempts"], error=row["error"], note=row["note"],
        result=json.loads(row["result"]) if row["result"] else None, created=row["created"],
        started=row["started"], finished=row["finished"], kind=row["kind"],
    )


def _image(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118  (iterating a Row gives values)


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

    def _migrate(self) -> None:
        """Add the columns a database from an older emaki lacks (their defaults fill old rows)."""
        with self._lock:
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, definition in ADDED_COLUMNS:
                if column not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")

    def _finished(self, job_id: str) -> None:
        for callback in self.on_finish:
            callback(job_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._changed.notify_all()

    # --- the queue ---

    def submit(self, params: dict[str, Any], *, keep: bool = True, kind: str = "generate") -> Job:
        """Queue a job of `kind` ('generate': `GenerationParams` fields; 'train': `TrainingParams`)."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
        job_id = uuid.uuid4().hex
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, status, kind, params, keep, created) VALUES (?, 'queued', ?, ?, ?, ?)",
                       (job_id, kind, json.dumps(params), int(keep), time.time()))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def recover(self) -> dict[str, int]:
        """At start-up: requeue (once) the jobs a crash left running; cancel client-only jobs."""
        now = time.time()
        with self._transaction() as db:
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
        """The oldest queued job, now `running`; waits up to `timeout` s for one (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        "SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
                    if row is not None:
                        self._db.execute(
                            "UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 WHERE seq = ?",
                            (time.time(), row["seq"]))
                        job = self._db.execute("SELECT * FROM jobs WHERE seq = ?", (row["seq"],)).fetchone()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                if row is not None:
                    self._changed.notify_all()
                    return _job(job)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
               error: str | None = None, images: Sequence[ImageRecord] = ()) -> None:
        """Record how a job ended, with its gallery rows, in one transaction."""
        assert status in FINISHED
        now = time.time()
        with self._transaction() as db:
            for image in images:
                db.execute(
                    "INSERT INTO images (job_id, path, seed, prompt, negative_prompt, model, width, height, "
                    "infotext, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, str(image.path), image.seed, image.prompt, image.negative_prompt, image.model,
                     image.width, image.height, image.infotext, now))
            db.execute("UPDATE jobs SET status = ?, result = ?, error = ?, finished = ? WHERE id = ?",
                       (status, json.dumps(result) if result is not None else None, error, now, job_id))
        self._finished(job_id)

    def requeue(self, job_id: str, note: str) -> None:
        """Put a running job back at its place in the queue (a training run stopped by a server
        stop: it goes on from its last save at the next start)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET status = 'queued', note = ? WHERE id = ? AND status = 'running'",
                       (note, job_id))

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False when it is not queued (running jobs are interrupted instead)."""
        with self._transaction() as db:
            cancelled = db.execute("UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                                   (time.time(), job_id)).rowcount == 1
        if cancelled:
            self._finished(job_id)
        return cancelled

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def jobs(self, status: str | None = None, limit: int = 100) -> list[Job]:
        with self._lock:
            if status:
                rows = self._db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq LIMIT ?",
                                        (status, limit)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    # --- the gallery ---

    def gallery(self, *, text: str | None = None, model: str | None = None, since: float | None = None,
                until: float | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; `text` matches the prompt or negative prompt (case-insensitive substring)."""
        where: list[str] = []
        args: list[Any] = []
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(prompt LIKE ? ESCAPE '\\' OR negative_prompt LIKE ? ESCAPE '\\')")
            args += [f"%{escaped}%"] * 2
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
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return _image(row) if row is not None else None

    def images_of(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM images WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [_image(r) for r in rows]

"""How request handlers and event streams learn that something changed (a job ended, the queue
moved, the running job took a step) without each of them polling the database: a request
waiting for its job sleeps on an event the job's end sets; an event stream sleeps on the
`ChangeBell`, which one watcher task rings for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import NamedTuple

from fastapi import HTTPException

from emaki.jobs.store import FINISHED, Job, JobStore
from emaki.jobs.worker import Progress, Worker

log = logging.getLogger("emaki.server")
WATCH_INTERVAL = 0.2  # seconds between the watcher's looks at the progress and the database
STOPPING = "the server is stopping before this job could run"


class Versions(NamedTuple):
    jobs: int  # the queue or a job's state changed
    progress: int  # the running job's progress changed


class ChangeBell:
    """Counters of changes that event streams wait on; `close()` (the server stops) wakes them
    all for good. Used in the event loop only (other threads go through `call_soon_threadsafe`)."""

    def __init__(self) -> None:
        self.versions = Versions(0, 0)
        self.closed = False
        self._rung: asyncio.Event | None = None

    def attach(self) -> None:
        """In the event loop, when the app starts (again)."""
        self._rung = asyncio.Event()
        self.closed = False

    def ring(self, *, jobs: bool = False, progress: bool = False) -> None:
        self.versions = Versions(self.versions.jobs + jobs, self.versions.progress + progress)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._rung is not None:  # a fresh event for the next wait; this one wakes every waiter
            self._rung.set()
            self._rung = asyncio.Event()

    async def changed(self, seen: Versions, timeout: float) -> bool:
        """Wait until the versions move past `seen` or the bell closes (True), or `timeout`
        seconds pass (False)."""
        if self.versions != seen or self.closed:
            return True
        if self._rung is None:
            raise RuntimeError("ChangeBell.changed before attach: the app's lifespan has not started")
        try:
            await asyncio.wait_for(self._rung.wait(), timeout)
        except TimeoutError:
            return self.versions != seen or self.closed
        return True


async def watch_changes(bell: ChangeBell, worker: Worker, database: str) -> None:
    """Ring `bell` when the worker's progress snapshot is replaced (a step, a job claimed or
    ended) or when anything commits to the database (a submission, from this process or
    another: SQLite's `data_version` moves). One task for all streams; both looks are cheap,
    and the store's own connection and lock are not touched."""
    connection = sqlite3.connect(database)

    def data_version(last: int) -> int:
        try:
            return int(connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as e:  # a busy or broken disk must not end the watching
            log.warning("watching %s: %s", database, e)
            return last

    try:
        last_progress: Progress | None = worker.progress()
        last_data = data_version(0)
        while not bell.closed:
            await asyncio.sleep(WATCH_INTERVAL)
            progress = worker.progress()
            data = data_version(last_data)
            claimed_or_ended = progress.job_id != (last_progress.job_id if last_progress else None)
            if progress is not last_progress or data != last_data:
                bell.ring(jobs=data != last_data or claimed_or_ended, progress=progress is not last_progress)
            last_progress, last_data = progress, data
    finally:
        connection.close()


class JobWaiters:
    """Lets request handlers await a job's end without polling the database: the store calls
    back from the worker thread and the event loop is woken at once (and the bell rung)."""

    def __init__(self, store: JobStore, bell: ChangeBell) -> None:
        self.store = store
        self.bell = bell
        self._events: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._finished_in_thread not in self.store.on_finish:  # an app started twice (tests)
            self.store.on_finish.append(self._finished_in_thread)

    def _finished_in_thread(self, job_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(self._ended, job_id)

    def _ended(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()
        self.bell.ring(jobs=True)

    def stop(self) -> None:
        """The server is stopping: wake every waiter (those of jobs that will not run now answer 503)."""
        for events in self._events.values():
            for event in events:
                event.set()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when `job_id` ends (or the server stops); read the job after entering,
        so that an end in between is not missed."""
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._events.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._events.pop(job_id, None)

    async def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """The job once it has ended, or None when `timeout` seconds pass first; HTTP 503 when
        the server stops before the job runs (a running job is interrupted: its end comes)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        with self.watch(job_id) as event:
            while True:
                job = self.store.get(job_id)
                if job is None or job.status in FINISHED:
                    return job
                if self.bell.closed and job.status != "running":
                    raise HTTPException(503, STOPPING)
                remaining = 5.0 if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    return None
                # The cap only guards against a lost wake-up (and, stopping, a job put back in
                # the queue, which does not count as an end).
                cap = 0.5 if self.bell.closed else 5.0
                with suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, cap))
                event.clear()

"""File jobs (merge, LoRA extraction, lineage) run by a worker with no engine, interrupted as
`/api/jobs/{id}/cancel` interrupts them, once their first slice is done: what the cancel tests of
those routes share."""

from __future__ import annotations

from typing import Any

from emaki.jobs.file_jobs import FileJobs
from emaki.jobs.worker import Worker


class NoEngine:
    """The worker's executor for file jobs alone (they need no engine)."""

    slots = 1


class Interrupting(FileJobs):
    """Interrupts its job once the first slice is read or written; `seen` keeps what the progress
    snapshot said then (its file job kind, step and steps)."""

    worker: Worker
    seen: list[tuple[str | None, int, int]]

    def run(self, kind: str, params: dict[str, Any], *, progress=None, cancel=None) -> dict[str, Any]:
        def first(done: int, total: int) -> None:
            self.worker.interrupt_job()
            if progress is not None:
                progress(done, total)
            snapshot = self.worker.progress()  # what `/api/jobs/{id}/events` reports
            self.seen.append((snapshot.file_job, snapshot.step, snapshot.steps))

        return super().run(kind, params, progress=first, cancel=cancel)

"""The cores each pytest-xdist worker may use. `make test` runs 2 workers on CI's 2 cores; each
pins itself to its share, and so every process it starts (`emaki` subprocesses, servers,
Chromium, Ray workers), since a child inherits its parent's CPU affinity. emaki's
`idle_cores()` counts the affinity, so a worker's engines and subprocesses take 1 thread on a
2-core machine instead of each seeing both cores idle and taking 2."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping


def worker_cores(cores: Iterable[int], worker: int, workers: int) -> set[int]:
    """Worker `worker`'s (0-based) share of `cores`: disjoint slices that cover them all, or one
    core each, in turn, when there are more workers than cores.

    >>> [worker_cores([0, 1], w, 2) for w in range(2)], [worker_cores(range(5), w, 2) for w in range(2)]
    ([{0}, {1}], [{0, 1}, {2, 3, 4}])
    """
    ordered = sorted(cores)
    if workers >= len(ordered):
        return {ordered[worker % len(ordered)]}
    return set(ordered[worker * len(ordered) // workers:(worker + 1) * len(ordered) // workers])


def worker_index(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(this worker's index, the number of workers) when this process is an xdist worker
    (`PYTEST_XDIST_WORKER=gw<N>`), else None."""
    name = environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw") or not name[2:].isdigit():
        return None
    return int(name[2:]), int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pin_this_worker(environ: Mapping[str, str]) -> None:
    """Pin this process (its calling thread, and every process and thread it starts from now on)
    to its share of the cores, where it is an xdist worker on a system with CPU affinity (Linux)."""
    index = worker_index(environ)
    if index is None or not hasattr(os, "sched_setaffinity"):
        return
    os.sched_setaffinity(0, worker_cores(os.sched_getaffinity(0), *index))

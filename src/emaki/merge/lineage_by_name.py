"""Lineage by name: what the CLI, `Engine.lineage` and the server's lineage jobs share.

`plan_lineage` finds the model and its candidate parents as `by_name.find_checkpoint` finds a
merge's models (a path, a file name or stem in the model folders, the demo model, or a hash) and
refuses what could not run (no candidate, one given twice) naming the field, opening nothing;
`run_lineage` then traces it (`lineage.trace_lineage`), stopping with `Interrupted` once `cancel`
is set. `lineage_view` is a result as the server's job records it: the CLI's `--json` plus the
summary lines the CLI prints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emaki.errors import Interrupted
from emaki.merge.by_name import find_checkpoint
from emaki.merge.lineage import LineageResult, trace_lineage
from emaki.merge.recipe import MergeError
from emaki.models.hashes import HashCache
from emaki.workspace import Workspace

#: `progress(done_bytes, total_bytes)` read of the model's weights
LineageProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class PlannedLineage:
    model: Path
    candidates: tuple[Path, ...]
    nonnegative: bool = False


def plan_lineage(workspace: Workspace, hashes: HashCache, model: str | Path, candidates: Sequence[str | Path], *,
                 nonnegative: bool = False, model_field: str = "model",
                 candidates_field: str = "candidates") -> PlannedLineage:
    """The files of `model` and `candidates`, checked (nothing opened but the hash cache)."""
    if isinstance(candidates, str | Path):
        raise MergeError(f"{candidates_field}: expected a list of candidate model names")
    if not candidates:
        raise MergeError(f"{candidates_field}: give at least one candidate model")
    if not isinstance(nonnegative, bool):
        raise MergeError(f"nonnegative: expected true or false, got {nonnegative!r}")
    found = find_checkpoint(model, workspace, hashes, model_field)
    paths: list[Path] = []
    for i, name in enumerate(candidates):
        path = find_checkpoint(name, workspace, hashes, f"{candidates_field}[{i}]")
        for j, earlier in enumerate(paths):
            # the same file twice would make the least squares singular (and is a slip)
            if path.resolve() == earlier.resolve():
                raise MergeError(f"{candidates_field}[{i}]: {str(name)!r} is the same file as "
                                 f"{candidates_field}[{j}]; give each candidate once")
        paths.append(path)
    return PlannedLineage(found, tuple(paths), nonnegative)


def run_lineage(planned: PlannedLineage, *, progress: LineageProgress | None = None,
                cancel: threading.Event | None = None) -> LineageResult:
    """`trace_lineage` of the planned files; `Interrupted` once `cancel` is set."""

    def report(done: int, total: int) -> None:
        if cancel is not None and cancel.is_set():
            raise Interrupted(f"{planned.model}: lineage interrupted")
        if progress is not None:
            progress(done, total)

    result = trace_lineage(planned.model, [str(p) for p in planned.candidates], nonnegative=planned.nonnegative,
                           progress=report)
    if cancel is not None and cancel.is_set():  # set after the last slice: still a cancel
        raise Interrupted(f"{planned.model}: lineage interrupted")
    return result


def lineage_view(result: LineageResult) -> dict[str, Any]:
    """The result as JSON: `emaki lineage --json`'s fields and `summary`, its printed lines."""
    return {**result.to_dict(), "summary": result.summary()}

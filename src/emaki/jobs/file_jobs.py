"""Queued jobs on model files: a merge (`kind` 'merge', LoRAs baked in included) and a LoRA
extraction ('extract-lora'), which make a file, and a lineage trace ('lineage', which reads only),
run by the worker on the workspace's files (`emaki.merge.by_name`, `lineage_by_name`), where the
server keeps its models.

A job's `params` are the request's fields with models as files (the server found them by name):
merge `{"models": [path, ...], "mode", "alpha", "blocks", "loras": [{"name", "te", "unet"}],
"output", "overwrite"}`, extraction `{"tuned": path, "base": path, "rank", "output", "overwrite"}`,
lineage `{"model": path, "candidates": [path, ...], "nonnegative"}`.
`check` refuses bad params before they are queued; `run` writes the file and returns the job's
`result`, naming the new model (a lineage's: `emaki lineage --json` and the summary lines).
Cancelled, a job stops between slices (layers) and leaves no file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from emaki.errors import ParamsError
from emaki.merge.by_name import (
    PlannedExtraction,
    PlannedMerge,
    plan_extraction,
    plan_merge,
    run_extraction,
    run_merge,
)
from emaki.merge.lineage_by_name import PlannedLineage, lineage_view, plan_lineage, run_lineage
from emaki.models.hashes import HashCache
from emaki.workspace import Workspace

FILE_JOB_KINDS = ("merge", "extract-lora", "lineage")
WRITING_KINDS = ("merge", "extract-lora")  # the file jobs that make a model file (a lineage only reads)
#: `progress(done, total)`: bytes written (a merge), layers fitted (an extraction) or bytes read (a lineage)
FileJobProgress = Callable[[int, int], None]


class FileJobs:
    """Checks and runs merge and extraction jobs in one workspace."""

    def __init__(self, workspace: Workspace, hashes: HashCache) -> None:
        self.workspace = workspace
        self.hashes = hashes

    def check(self, kind: str, params: dict[str, Any]) -> None:
        """Refuse (an `EmakiError` naming the field) what could not run; nothing is opened."""
        self._plan(kind, params)

    def _plan(self, kind: str, params: dict[str, Any]) -> PlannedMerge | PlannedExtraction | PlannedLineage:
        if kind == "merge":
            loras = [(lora["name"], lora.get("te", 1.0), lora.get("unet", lora.get("te", 1.0)))
                     for lora in params.get("loras") or []]
            return plan_merge(self.workspace, self.hashes, params["models"], output=params["output"],
                              mode=params.get("mode"), alpha=params.get("alpha"), blocks=params.get("blocks"),
                              loras=loras, overwrite=bool(params.get("overwrite")))
        if kind == "extract-lora":
            return plan_extraction(self.workspace, self.hashes, params["tuned"], params["base"],
                                   output=params["output"], rank=params.get("rank", 32),
                                   overwrite=bool(params.get("overwrite")))
        if kind == "lineage":
            return plan_lineage(self.workspace, self.hashes, params["model"], params["candidates"],
                                nonnegative=params.get("nonnegative", False))
        raise ParamsError(f"job kind {kind!r}: expected one of {', '.join(FILE_JOB_KINDS)}")

    def run(self, kind: str, params: dict[str, Any], *, progress: FileJobProgress | None = None,
            cancel: threading.Event | None = None) -> dict[str, Any]:
        """Make the file; the job's result: `name` (the new model's, as listings show it),
        `filename`, `path`, and what the run found (a lineage: `lineage_view`, no file)."""
        planned = self._plan(kind, params)
        if isinstance(planned, PlannedMerge):
            merged = run_merge(planned.recipe, planned.out, hashes=self.hashes, overwrite=planned.overwrite,
                               progress=progress, cancel=cancel)
            return {"kind": kind, "name": merged.path.stem, "filename": merged.path.name, "path": str(merged.path),
                    "recipe": merged.recipe.to_dict(), "seconds": merged.seconds, "bytes": merged.nbytes,
                    "lora_unmatched": {label: len(keys) for label, keys in merged.lora_unmatched.items()}}
        if isinstance(planned, PlannedLineage):
            return {"kind": kind, **lineage_view(run_lineage(planned, progress=progress, cancel=cancel))}
        from emaki.merge.blocks import block_of

        def layers(done: int, total: int, key: str) -> None:
            if progress is not None:
                progress(done, total)

        extraction = run_extraction(planned.tuned, planned.base, planned.out, rank=planned.rank,
                                    overwrite=planned.overwrite, progress=layers, cancel=cancel)
        lora = extraction.lora
        return {"kind": kind, "name": extraction.path.stem, "filename": extraction.path.name,
                "path": str(extraction.path), "rank": planned.rank, "sshs_model_hash": extraction.model_hash,
                "relative_error": lora.relative_error, "block_errors": lora.relative_errors(block_of),
                "layers": len(lora.layers), "text_encoder_dropped": lora.text_encoder_dropped}

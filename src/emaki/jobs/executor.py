"""Where a queued job runs: the seam between the queue and the engine. `LocalExecutor` runs it
in this process on an `Engine`; a remote executor (a Ray cluster) implements the same calls."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from emaki.engine.engine import Engine
from emaki.engine.run import Cancel, GenerationResult, ProgressCallback
from emaki.params import GenerationParams
from emaki.training.params import TrainingParams
from emaki.training.report import TrainingCallback, TrainingOutcome

if TYPE_CHECKING:
    from emaki.xyz.run import GridProgressCallback, GridResult
    from emaki.xyz.spec import GridSpec


class Executor(Protocol):
    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> GenerationResult:
        """Generate `params`; write the images to the workspace's outputs when `save`."""
        ...

    def grid(self, params: GenerationParams, spec: GridSpec, *, progress: GridProgressCallback | None,
             cancel: Cancel, save: bool) -> GridResult:
        """Run the X/Y/Z plot `spec` over `params`; on an interrupt, `Interrupted` carries the
        partial `GridResult` as its `result`."""
        ...

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None,
              cancel: threading.Event) -> TrainingOutcome:
        """Train an embedding or a hypernetwork; once `cancel` is set, save and return `cancelled`."""
        ...

    def resumable(self, params: TrainingParams) -> bool:
        """Whether an earlier run of `params` left something to go on from (`resume`)."""
        ...


class LocalExecutor:
    """Runs jobs on an engine in the calling thread (the worker's)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> GenerationResult:
        return self.engine.generate(params, progress=progress, cancel=cancel, save=save)

    def grid(self, params: GenerationParams, spec: GridSpec, *, progress: GridProgressCallback | None,
             cancel: Cancel, save: bool) -> GridResult:
        from emaki.xyz.run import run_grid  # the grid code loads with the first grid

        return run_grid(self.engine, params, spec, progress=progress, cancel=cancel, save=save)

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None,
              cancel: threading.Event) -> TrainingOutcome:
        return self.engine.train(params, progress=progress, cancel=cancel)

    def resumable(self, params: TrainingParams) -> bool:
        """A saved training state, or the trained file (unless the run was to replace it)."""
        from emaki.training.checkpoint import STATE_FILE
        from emaki.training.trainer import log_directory, trained_file

        if (log_directory(self.engine, params) / "state" / STATE_FILE).is_file():
            return True
        return not params.overwrite and trained_file(self.engine, params).is_file()

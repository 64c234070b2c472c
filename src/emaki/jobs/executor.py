"""Where a queued job runs: the seam between the queue and the engine. `LocalExecutor` runs it
in this process on an `Engine`; a remote executor (a Ray cluster) implements the same call."""

from __future__ import annotations

from typing import Protocol

from emaki.engine.engine import Engine
from emaki.engine.run import Cancel, GenerationResult, ProgressCallback
from emaki.params import GenerationParams


class Executor(Protocol):
    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> GenerationResult:
        """Generate `params`; write the images to the workspace's outputs when `save`."""
        ...


class LocalExecutor:
    """Runs jobs on an engine in the calling thread (the worker's)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, params: GenerationParams, *, progress: ProgressCallback | None, cancel: Cancel,
            save: bool) -> GenerationResult:
        return self.engine.generate(params, progress=progress, cancel=cancel, save=save)

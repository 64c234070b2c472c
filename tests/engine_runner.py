"""Tests call the engine through `generate(params, ...)`: one `Engine` per workspace and policy,
kept for the session (loading a model once, as a long-lived engine does)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from emaki.devices import DevicePolicy
from emaki.engine import Cancel, Engine, GenerationResult
from emaki.params import GenerationParams
from emaki.workspace import Workspace, workspace_from_environment

ONE_THREAD = DevicePolicy.choose("fp32", "cpu", threads=1)
_ENGINES: dict[tuple[Workspace, DevicePolicy], Engine] = {}


def runner_workspace(embeddings_dirs: list[Path] | None = None,
                   hypernetworks_dirs: list[Path] | None = None) -> Workspace:
    workspace = workspace_from_environment(os.environ)
    if embeddings_dirs is not None:
        workspace = workspace.with_folders("embeddings", embeddings_dirs)
    if hypernetworks_dirs is not None:
        workspace = workspace.with_folders("hypernetworks", hypernetworks_dirs)
    return workspace


def engine_for(workspace: Workspace, policy: DevicePolicy | None = None) -> Engine:
    key = (workspace, policy or ONE_THREAD)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(workspace, key[1])
    return _ENGINES[key]


def generate(params: GenerationParams, *, embeddings_dirs: list[Path] | None = None,
             hypernetworks_dirs: list[Path] | None = None, policy: DevicePolicy | None = None,
             interrupt: threading.Event | None = None, skip: threading.Event | None = None,
             **options: Any) -> GenerationResult:
    engine = engine_for(runner_workspace(embeddings_dirs, hypernetworks_dirs), policy)
    cancel = Cancel(interrupt or threading.Event(), skip or threading.Event())
    return engine.generate(params, cancel=cancel, **options)

"""The upscaler model files in the workspace as listing rows (`emaki models`): name,
architecture and scale read from tensor names and shapes (nothing loaded), or why a file is
skipped — the shape of the network kinds' rows (`status` "loaded" or "skipped" with a `reason`)."""

from __future__ import annotations

from typing import Any

from emaki.errors import EmakiError
from emaki.upscalers.loading import describe_upscaler
from emaki.upscalers.registry import model_upscalers
from emaki.workspace import Workspace


def upscaler_rows(workspace: Workspace) -> list[dict[str, Any]]:
    """One row per model file in the workspace's upscaler folders, in `model_upscalers` order."""
    rows = []
    for upscaler in model_upscalers(workspace):
        assert upscaler.path is not None  # model upscalers always have their file
        row: dict[str, Any] = {"name": upscaler.name, "architecture": None, "scale": upscaler.scale,
                               "path": str(upscaler.path), "status": "loaded"}
        try:
            row["architecture"], row["scale"] = describe_upscaler(upscaler.path)
        except EmakiError as e:
            row |= {"status": "skipped", "reason": str(e).removeprefix(f"{upscaler.path}: ")}
        rows.append(row)
    return rows

"""Where emaki keeps models and outputs: `EMAKI_HOME`, else the user's data folder."""

from __future__ import annotations

import os
from pathlib import Path


def emaki_home() -> Path:
    configured = os.environ.get("EMAKI_HOME")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "emaki"


def models_dir() -> Path:
    return emaki_home() / "models"


def outputs_dir() -> Path:
    return emaki_home() / "outputs"

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


def embeddings_dir() -> Path:
    return emaki_home() / "embeddings"


def hypernetworks_dir() -> Path:
    return emaki_home() / "hypernetworks"


def a1111_dir() -> Path | None:
    """An existing A1111 install to read models from (`EMAKI_A1111`), or None."""
    configured = os.environ.get("EMAKI_A1111")
    return Path(configured).expanduser() if configured else None


def embedding_folders() -> list[Path]:
    """Where embeddings are looked for: `EMAKI_HOME/embeddings`, then A1111's `embeddings`."""
    a1111 = a1111_dir()
    return [embeddings_dir()] + ([a1111 / "embeddings"] if a1111 else [])


def hypernetwork_folders() -> list[Path]:
    """Where hypernetworks are looked for: `EMAKI_HOME/hypernetworks`, then A1111's
    `models/hypernetworks`."""
    a1111 = a1111_dir()
    return [hypernetworks_dir()] + ([a1111 / "models" / "hypernetworks"] if a1111 else [])


def hash_cache_path() -> Path:
    """Where file hashes are remembered between runs (keyed by path, size and mtime)."""
    return emaki_home() / "cache" / "hashes.json"

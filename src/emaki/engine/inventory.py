"""What emaki finds on disk: checkpoints, VAEs and every network kind, as plain rows.

Folders come from the `Workspace` (emaki's own, then an A1111 install's, read-only). The CLI
(`emaki models`) and the server (`/sdapi/v1/sd-models`, ...) list the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaki.engine.networks import NETWORK_KINDS, NetworkLibraries
from emaki.errors import EmakiError
from emaki.models.hashes import HashCache
from emaki.models.regular_files import regular_file_stat
from emaki.networks import walk_files
from emaki.workspace import Workspace

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass
class Inventory:
    """Everything found, as rows of plain values; `networks` by folder kind ("embeddings",
    "hypernetworks", ...). A checkpoint or VAE that cannot be read (a FIFO, a device, a broken
    link, an unreadable file) is not offered: it is in `skipped` ({"kind", "name", "path",
    "reason"}), as network files are rows with status "skipped"."""

    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    vaes: list[dict[str, Any]] = field(default_factory=list)
    networks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def rows(self, folder: str) -> list[dict[str, Any]]:
        return self.networks.get(folder, [])

    def skipped_of(self, kind: str) -> list[dict[str, Any]]:
        """The skipped rows of "checkpoint" or "vae"."""
        return [row for row in self.skipped if row["kind"] == kind]

    def as_json(self) -> dict[str, Any]:
        return {"checkpoints": self.checkpoints, "vaes": self.vaes, **self.networks, "skipped": self.skipped}


def _is_vae_file(path: Path) -> bool:
    return ".vae." in path.name.lower() or any(part.lower() == "vae" for part in path.parent.parts[-1:])


def _inside_diffusers_folder(path: Path) -> bool:
    return any((parent / "model_index.json").is_file() for parent in path.parents[:3])


def _hash_or_reason(path: Path, cache: HashCache | None) -> tuple[str | None, str | None]:
    """(sha256, None) for a regular file (no sha256 without a cache); (None, why) for a FIFO, a
    device, a broken link or a file that cannot be read: those are never opened."""
    try:
        regular_file_stat(path)
        return (cache.get(path).sha256 if cache is not None else None), None
    except (EmakiError, OSError) as e:
        return None, str(e).removeprefix(f"{path}: ")


def take_inventory(workspace: Workspace, *, text_width: int | None, hashes: bool,
                   libraries: NetworkLibraries | None = None) -> Inventory:
    """List checkpoints, VAEs and every registered network kind in the workspace's folders
    (embeddings of another token width than `text_width` as skipped; None: any width)."""
    cache = HashCache(workspace.hash_cache) if hashes else None
    inventory = Inventory()
    model_folders = workspace.folders("checkpoints")
    for path in walk_files(model_folders, CHECKPOINT_SUFFIXES):
        if _is_vae_file(path) or _inside_diffusers_folder(path):
            continue
        digest, reason = _hash_or_reason(path, cache)
        if reason is not None:
            inventory.skipped.append({"kind": "checkpoint", "name": path.stem, "path": str(path), "reason": reason})
            continue
        inventory.checkpoints.append({"name": path.stem, "path": str(path), "hash": digest[:10] if digest else None,
                                      "sha256": digest})
    for folder in model_folders:
        for index in sorted(folder.glob("*/model_index.json")) if folder.is_dir() else []:
            inventory.checkpoints.append({"name": index.parent.name, "path": str(index.parent), "hash": None,
                                          "sha256": None})
    vae_paths = walk_files(workspace.folders("vaes"), VAE_SUFFIXES) + [
        p for p in walk_files(model_folders, VAE_SUFFIXES) if ".vae." in p.name.lower()]
    for path in dict.fromkeys(vae_paths):
        digest, reason = _hash_or_reason(path, cache)
        if reason is not None:
            inventory.skipped.append({"kind": "vae", "name": path.name, "path": str(path), "reason": reason})
            continue
        inventory.vaes.append({"name": path.name, "path": str(path), "hash": digest[:10] if digest else None})
    libraries = libraries or NetworkLibraries(workspace)
    for kind in NETWORK_KINDS:
        inventory.networks[kind.folder] = libraries.rows(kind, text_width)
    return inventory

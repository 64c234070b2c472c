"""What the server may load, by name: checkpoints, VAEs, hypernetworks, embeddings and LoRAs
found in the configured folders (and the bundled demo model). A name from an HTTP request is
matched against these lists and nothing else, so a request can never make the server open a
file outside those folders.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emaki.engine.inventory import Inventory, take_inventory
from emaki.engine.networks import NetworkLibraries, kind_for_tag
from emaki.errors import EmakiError
from emaki.models.convert import CLIP_PREFIX
from emaki.models.hashes import HashCache
from emaki.models.safetensors_header import read_safetensors_header
from emaki.workspace import Workspace


class NameNotAllowed(EmakiError):
    """A name from a request that is a path, or names nothing in the configured folders (HTTP 400)."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint as `/sdapi/v1/sd-models` lists it."""

    title: str  # "file.safetensors [hash10]", what A1111 clients send back in `sd_model_checkpoint`
    model_name: str
    filename: str
    hash: str | None
    sha256: str | None

    def names(self) -> set[str]:
        """Every spelling a client may use for it."""
        spelled = {self.title, self.model_name, Path(self.filename).name}
        if self.hash:
            spelled |= {self.hash, f"{self.model_name} [{self.hash}]"}
        return spelled


TOKEN_EMBEDDING_KEY = CLIP_PREFIX + "text_model.embeddings.token_embedding.weight"


def text_width(checkpoint: str) -> int:
    """The checkpoint's token-embedding width, from the safetensors header alone (768, SD 1.x's,
    for other formats): embeddings of another width do not fit it."""
    try:
        entry = read_safetensors_header(checkpoint).get(TOKEN_EMBEDDING_KEY)
    except (EmakiError, OSError):
        return 768
    return int(entry["shape"][-1]) if isinstance(entry, dict) and entry.get("shape") else 768


def _checkpoint_entries(inventory: Inventory, hashes: HashCache) -> list[CheckpointEntry]:
    """The inventory's checkpoints plus the bundled demo model, titled as A1111 titles them."""
    from emaki.demo import demo_model_path

    rows = list(inventory.checkpoints)
    demo = demo_model_path()
    if demo.is_file() and all(Path(r["path"]) != demo for r in rows):
        digest = hashes.get(demo).sha256
        rows.append({"name": demo.stem, "path": str(demo), "hash": digest[:10], "sha256": digest})
    entries = []
    for row in rows:
        filename = Path(row["path"]).name
        title = f"{filename} [{row['hash']}]" if row["hash"] else filename
        entries.append(CheckpointEntry(title, row["name"], row["path"], row["hash"], row["sha256"]))
    return entries


def check_plain_name(field: str, value: str) -> None:
    """Names only: separators, `..` and absolute paths are refused before any lookup."""
    if "/" in value or "\\" in value or value.startswith(".") or Path(value).is_absolute() or "\x00" in value:
        raise NameNotAllowed(f"{field}: {value!r} is a path; give the name of a file in the configured folders")


class Catalog:
    """The server's view of `emaki models`, refreshed on demand (`refresh-checkpoints`)."""

    def __init__(self, workspace: Workspace, libraries: NetworkLibraries | None = None,
                 text_width: int = 768) -> None:
        self.workspace = workspace
        self.libraries = libraries or NetworkLibraries(workspace)
        self.text_width = text_width
        self._lock = threading.Lock()
        self._listing: tuple[Inventory, list[CheckpointEntry]] | None = None
        self._invalidations = 0  # how many times a file was made: a walk begun before the last one may lack it

    def refresh(self) -> Inventory:
        """Walk the folders (and hash what is new) once; requests read the cached listing."""
        return self._walk()[0]

    def invalidate(self) -> None:
        """Forget the listing (a file was made or trained): the next read walks the folders again."""
        with self._lock:
            self._listing = None
            self._invalidations += 1

    def _walk(self) -> tuple[Inventory, list[CheckpointEntry]]:
        """The folders as they are now; kept as the listing unless a file was made while they
        were walked (the walk may have passed its folder already)."""
        with self._lock:
            invalidations = self._invalidations
        inventory = take_inventory(self.workspace, text_width=self.text_width, hashes=True, libraries=self.libraries)
        listing = (inventory, _checkpoint_entries(inventory, HashCache(self.workspace.hash_cache)))
        with self._lock:
            if self._invalidations == invalidations:
                self._listing = listing
        return listing

    def _cached(self) -> tuple[Inventory, list[CheckpointEntry]]:
        with self._lock:
            listing = self._listing
        return listing if listing is not None else self._walk()

    @property
    def inventory(self) -> Inventory:
        return self._cached()[0]

    def checkpoints(self) -> list[CheckpointEntry]:
        return list(self._cached()[1])

    def find_checkpoint(self, name: str, field: str = "sd_model_checkpoint") -> CheckpointEntry:
        check_plain_name(field, name)
        entries = self.checkpoints()
        found = _named(entries, name)
        if found is None:  # the file may be newer than the listing: a user may have copied it in since
            entries = list(self._walk()[1])
            found = _named(entries, name)
        if found is None:
            known = ", ".join(e.title for e in entries) or "none"
            raise NameNotAllowed(f"{field}: no checkpoint {name!r} in the model folders (known: {known})")
        return found

    def find_vae(self, name: str, field: str = "sd_vae") -> str | None:
        """A VAE file path, or None for "Automatic"/"None" (the checkpoint's own VAE)."""
        if name in ("", "Automatic", "None"):
            return None
        check_plain_name(field, name)
        for row in self.inventory.vaes:
            if name in (row["name"], Path(row["name"]).stem):
                return row["path"]
        raise NameNotAllowed(f"{field}: no VAE {name!r} in the VAE folders")

    def find_hypernetwork(self, name: str, field: str = "sd_hypernetwork") -> str:
        check_plain_name(field, name)
        for row in self.inventory.rows("hypernetworks"):
            if name == row["name"]:
                return row["name"]
        raise NameNotAllowed(f"{field}: no hypernetwork {name!r} in the hypernetwork folders")

    def loras(self) -> list[dict[str, Any]]:
        """The LoRA files that load (`emaki models` rows), as `/sdapi/v1/loras` lists them."""
        return [row for row in self.inventory.rows("loras") if row["status"] == "loaded"]

    def find_lora(self, name: str, field: str = "prompt") -> dict[str, Any]:
        """The LoRA row `<lora:name>` selects, matched as the engine matches it (file stem, then
        `ss_output_name` alias, then stem ignoring case). A name the listing lacks is looked for
        again in the LoRA folders (a file added since, as A1111 re-lists on a miss)."""
        check_plain_name(field, name)
        found = _lora_named(self.inventory.rows("loras"), name)
        if found is None:
            found = _lora_named(self.libraries.rows(kind_for_tag("lora"), self.text_width), name)
        if found is None:
            where = ", ".join(str(f) for f in self.workspace.folders("loras"))
            raise NameNotAllowed(f"{field}: no LoRA {name!r} in the LoRA folders ({where})")
        if found["status"] != "loaded":
            raise NameNotAllowed(f"{field}: LoRA {name!r} ({found['path']}) cannot be used: {found['reason']}")
        return found


def _lora_named(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The row `name` selects, in `LoraLibrary.find`'s order."""
    for matches in (lambda row: row["name"] == name, lambda row: row["alias"] == name,
                    lambda row: row["name"].lower() == name.lower()):
        for row in rows:
            if matches(row):
                return row
    return None


def _named(entries: list[CheckpointEntry], name: str) -> CheckpointEntry | None:
    return next((entry for entry in entries if name in entry.names()), None)

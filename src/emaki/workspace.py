"""Where every kind of file lives: one `Workspace` value, built once by a surface (CLI flags,
server settings, the Python API's environment) and passed down; nothing below reads settings.

`home` (EMAKI_HOME) holds emaki's own folders; `a1111` adds an existing A1111 install's folders,
read-only; `overrides` replaces the folder list of a kind (`--embeddings-dir ...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emaki.errors import ParamsError
from emaki.files import STALE_PARTIAL_S, remove_stale_partials

FolderKind = Literal["checkpoints", "vaes", "embeddings", "hypernetworks", "loras", "upscalers", "wildcards",
                     "tags"]

# emaki's own folder of each kind, under `home`.
HOME_FOLDERS: Mapping[FolderKind, str] = {
    "checkpoints": "models",
    "vaes": "models/VAE",
    "embeddings": "embeddings",
    "hypernetworks": "hypernetworks",
    "loras": "loras",
    "upscalers": "upscalers",
    "wildcards": "wildcards",
    "tags": "tags",  # prompt-tag lists for the page's autocomplete (tagcomplete CSVs)
}
# The same kinds in an A1111 install (its `--*-dir` defaults).
A1111_FOLDERS: Mapping[FolderKind, tuple[str, ...]] = {
    "checkpoints": ("models/Stable-diffusion",),
    "vaes": ("models/VAE",),
    "embeddings": ("embeddings",),
    "hypernetworks": ("models/hypernetworks",),
    "loras": ("models/Lora", "models/LyCORIS"),
    "upscalers": ("models/ESRGAN", "models/RealESRGAN", "models/SwinIR", "models/DAT"),
    "wildcards": ("extensions/sd-dynamic-prompts/wildcards",),
    "tags": ("extensions/a1111-sd-webui-tagcomplete/tags",),
}


@dataclass(frozen=True)
class Workspace:
    """The folders of one emaki setup."""

    home: Path
    a1111: Path | None = None
    overrides: tuple[tuple[FolderKind, tuple[Path, ...]], ...] = ()  # a tuple: workspaces are hashable

    def folders(self, kind: FolderKind) -> list[Path]:
        """Where files of `kind` are looked for, emaki's own folder first."""
        replaced = dict(self.overrides)
        if kind in replaced:
            return list(replaced[kind])
        found = [self.home / HOME_FOLDERS[kind]]
        if self.a1111 is not None:
            found += [self.a1111 / sub for sub in A1111_FOLDERS[kind]]
        return found

    def with_folders(self, kind: FolderKind, folders: list[Path]) -> Workspace:
        kept = tuple((k, v) for k, v in self.overrides if k != kind)
        return Workspace(self.home, self.a1111, (*kept, (kind, tuple(folders))))

    @property
    def model_search(self) -> list[Path]:
        """Folders a checkpoint *name* is looked up in (A1111's own layout inside `home` too)."""
        first, *rest = self.folders("checkpoints")
        return [first, first / "Stable-diffusion", *rest]

    @property
    def outputs(self) -> Path:
        return self.home / "outputs"

    @property
    def styles_file(self) -> Path:
        return self.home / "styles.csv"

    @property
    def database(self) -> Path:
        return self.home / "server.db"

    @property
    def hash_cache(self) -> Path:
        """File hashes remembered between runs (keyed by path, size and mtime)."""
        return self.home / "cache" / "hashes.json"


def default_home(environ: Mapping[str, str]) -> Path:
    """`EMAKI_HOME`, else `$XDG_DATA_HOME/emaki`, else `~/.local/share/emaki`."""
    configured = environ.get("EMAKI_HOME")
    if configured:
        return Path(configured).expanduser()
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "emaki"


def workspace_from_environment(environ: Mapping[str, str], *, home: Path | None = None,
                               a1111: Path | None = None) -> Workspace:
    """The workspace a surface starts from: flags (`home`, `a1111`) win over `EMAKI_HOME` and
    `EMAKI_A1111`. A named A1111 folder must exist."""
    configured = environ.get("EMAKI_A1111")
    root = a1111 if a1111 is not None else (Path(configured).expanduser() if configured else None)
    if root is not None and not root.is_dir():
        raise ParamsError(f"--a1111: {root} is not a folder")
    workspace = Workspace(home if home is not None else default_home(environ), root)
    _remove_leftovers(workspace)
    return workspace


def _remove_leftovers(workspace: Workspace) -> None:
    """Clear what writers killed mid-write left (`files.remove_stale_partials`) in the folders
    emaki writes to under `home`, never an A1111 install's. Every surface starts here."""
    folders = {workspace.home, workspace.hash_cache.parent}
    folders.update(workspace.home / sub for sub in HOME_FOLDERS.values())
    for folder in sorted(folders):
        remove_stale_partials(folder, older_than_s=STALE_PARTIAL_S)

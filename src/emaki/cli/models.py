"""`emaki models`: the checkpoints, VAEs, embeddings and hypernetworks emaki finds, with hashes.

Folders: `EMAKI_HOME/models` (VAEs in `models/VAE`), `EMAKI_HOME/embeddings`,
`EMAKI_HOME/hypernetworks`, and, with `--a1111 PATH` (or `EMAKI_A1111`), that install's
`models/Stable-diffusion`, `models/VAE`, `embeddings` and `models/hypernetworks`, read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from emaki.cli import app
from emaki.errors import EmakiError
from emaki.home import a1111_dir, embeddings_dir, hash_cache_path, hypernetworks_dir, models_dir
from emaki.networks import EmbeddingLibrary, load_hypernetwork, walk_files

console = Console()
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass
class Inventory:
    """Everything found, as rows of plain values (what `--json` prints)."""

    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    vaes: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    hypernetworks: list[dict[str, Any]] = field(default_factory=list)


def _is_vae_file(path: Path) -> bool:
    return ".vae." in path.name.lower() or any(part.lower() == "vae" for part in path.parent.parts[-1:])


def _inside_diffusers_folder(path: Path) -> bool:
    return any((parent / "model_index.json").is_file() for parent in path.parents[:3])


def take_inventory(a1111: Path | None, *, text_width: int, hashes: bool) -> Inventory:
    """List the four kinds of files under emaki's folders and (if given) an A1111 install."""
    from emaki.models.hashes import HashCache

    cache = HashCache(hash_cache_path()) if hashes else None

    def sha256(path: Path) -> str | None:
        return cache.get(path).sha256 if cache is not None else None

    inventory = Inventory()
    model_folders = [models_dir()] + ([a1111 / "models" / "Stable-diffusion"] if a1111 else [])
    vae_folders = [models_dir() / "VAE"] + ([a1111 / "models" / "VAE"] if a1111 else [])
    for path in walk_files(model_folders, CHECKPOINT_SUFFIXES):
        if _is_vae_file(path) or _inside_diffusers_folder(path):
            continue
        digest = sha256(path)
        inventory.checkpoints.append({"name": path.stem, "path": str(path), "hash": digest[:10] if digest else None,
                                      "sha256": digest})
    for folder in model_folders:
        for index in sorted(folder.glob("*/model_index.json")) if folder.is_dir() else []:
            inventory.checkpoints.append({"name": index.parent.name, "path": str(index.parent), "hash": None,
                                          "sha256": None})
    vae_paths = walk_files(vae_folders, VAE_SUFFIXES) + [p for p in walk_files(model_folders, VAE_SUFFIXES)
                                                        if ".vae." in p.name.lower()]
    for path in dict.fromkeys(vae_paths):
        digest = sha256(path)
        inventory.vaes.append({"name": path.name, "path": str(path), "hash": digest[:10] if digest else None})
    embedding_folders = [embeddings_dir()] + ([a1111 / "embeddings"] if a1111 else [])
    scan = EmbeddingLibrary().scan(embedding_folders, expected_width=text_width)
    for embedding in scan.loaded.values():
        inventory.embeddings.append({"name": embedding.name, "path": str(embedding.path), "status": "loaded",
                                     "vectors": embedding.num_vectors, "width": embedding.width,
                                     "step": embedding.step, "hash": embedding.shorthash, "reason": None})
    for skipped in scan.skipped:
        inventory.embeddings.append({"name": skipped.name, "path": str(skipped.path), "status": "skipped",
                                     "vectors": None, "width": None, "step": None, "hash": None,
                                     "reason": skipped.reason})
    hn_folders = [hypernetworks_dir()] + ([a1111 / "models" / "hypernetworks"] if a1111 else [])
    for path in walk_files(hn_folders, (".pt",)):
        row: dict[str, Any] = {"name": path.stem, "path": str(path)}
        try:
            hn = load_hypernetwork(path)
            row |= {"status": "loaded", "sizes": hn.sizes, "layer_structure": hn.layer_structure,
                    "activation": hn.activation_func, "step": hn.step, "hash": hn.shorthash, "reason": None}
        except EmakiError as e:
            row |= {"status": "skipped", "sizes": None, "layer_structure": None, "activation": None, "step": None,
                    "hash": None, "reason": str(e)}
        inventory.hypernetworks.append(row)
    return inventory


def _print(inventory: Inventory) -> None:
    def heading(title: str, rows: list[dict[str, Any]]) -> None:
        console.print(f"[bold]{title}[/] ({len(rows)})", highlight=False)
        if not rows:
            console.print("  (none found)", highlight=False)

    heading("Checkpoints", inventory.checkpoints)
    for row in inventory.checkpoints:
        console.print(f"  {escape(row['name'])} [{row['hash'] or '-'}]  {escape(row['path'])}", highlight=False)
    heading("VAEs", inventory.vaes)
    for row in inventory.vaes:
        console.print(f"  {escape(row['name'])} [{row['hash'] or '-'}]  {escape(row['path'])}", highlight=False)
    heading("Embeddings", inventory.embeddings)
    for row in inventory.embeddings:
        if row["status"] == "loaded":
            console.print(f"  {escape(row['name'])} [{row['hash']}]  {row['vectors']} vectors × {row['width']}"
                          f"{'' if row['step'] is None else ', step ' + str(row['step'])}  {escape(row['path'])}",
                          highlight=False)
        else:
            console.print(f"  {escape(row['name'])}  skipped: {escape(row['reason'])}  {escape(row['path'])}",
                          highlight=False)
    heading("Hypernetworks", inventory.hypernetworks)
    for row in inventory.hypernetworks:
        if row["status"] == "loaded":
            console.print(f"  {escape(row['name'])} [{row['hash']}]  sizes {row['sizes']}, structure "
                          f"{row['layer_structure']}, activation {row['activation']}  {escape(row['path'])}",
                          highlight=False)
        else:
            console.print(f"  {escape(row['name'])}  skipped: {escape(row['reason'])}", highlight=False)


@app.command("models")
def models_command(
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to list too (default: EMAKI_A1111).")] = None,
    text_width: Annotated[int, typer.Option("--text-width", help="Token-embedding width embeddings must have (768 for SD 1.x).")] = 768,
    no_hashes: Annotated[bool, typer.Option("--no-hashes", help="Skip hashing checkpoints and VAEs (slow the first time).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the checkpoints, VAEs, embeddings (loaded or skipped, and why) and hypernetworks found."""
    root = a1111 if a1111 is not None else a1111_dir()
    if root is not None and not root.is_dir():
        raise EmakiError(f"--a1111 {root}: no such folder")
    inventory = take_inventory(root, text_width=text_width, hashes=not no_hashes)
    if as_json:
        print(json.dumps(inventory.__dict__, ensure_ascii=False, indent=1))
    else:
        _print(inventory)

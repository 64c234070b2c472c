"""What emaki finds on disk: checkpoints, VAEs, embeddings and hypernetworks, as plain rows.

Folders: `EMAKI_HOME/models` (VAEs in `models/VAE`), `EMAKI_HOME/embeddings`,
`EMAKI_HOME/hypernetworks`, and, for an A1111 install, its `models/Stable-diffusion`,
`models/VAE`, `embeddings` and `models/hypernetworks`, read-only. The CLI (`emaki models`) and
the server (`/sdapi/v1/sd-models`, ...) list the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaki.errors import EmakiError
from emaki.home import embeddings_dir, hash_cache_path, hypernetworks_dir, models_dir
from emaki.networks import EmbeddingLibrary, load_hypernetwork, walk_files

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

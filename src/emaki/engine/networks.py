"""The network registry: each kind of file attached to a model (embedding, hypernetwork, ...)
is one `NetworkKind` entry. The inventory, `emaki models`, the A1111 listing routes, prompt
tags and the infotext iterate over `NETWORK_KINDS`, so a new kind is one module + one entry.

An entry says where its files live (a `Workspace` folder kind), which prompt tag selects it
(`<hypernet:name:strength>`, plus aliases such as `<lyco:...>` for LoRAs; None for kinds used
by name in the prompt, like embeddings), how its files are listed, and how a run activates
it: load, patch the model through the run's `ModelHandle` (undone when the run ends), and the
infotext fields it adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from emaki.engine.patching import ModelHandle
from emaki.engine.run import Extension, Run
from emaki.errors import EmakiError, ParamsError
from emaki.networks import (
    ChosenLora,
    EmbeddingLibrary,
    EmbeddingScan,
    HypernetworkLibrary,
    KeptPatches,
    LoraLibrary,
    apply_hypernetworks,
    lora_hashes,
    lora_strengths,
    model_targets,
    walk_files,
)
from emaki.prompts.networks import NetworkTag
from emaki.safety.embeddings import EmbeddingReadings
from emaki.workspace import FolderKind, Workspace


class NetworkKind(Protocol):
    @property
    def name(self) -> str:
        """What listings call it: "hypernetwork"."""

    @property
    def title(self) -> str:
        """The heading of its listing: "Hypernetworks"."""

    @property
    def tag(self) -> str | None:
        """The prompt tag kind (`<hypernet:...>`), or None when used by name."""

    @property
    def tag_aliases(self) -> tuple[str, ...]:
        """Other tag kinds that mean the same (`<lyco:...>` for `<lora:...>`, as A1111)."""

    @property
    def folder(self) -> FolderKind:
        """The workspace folder kind its files live in."""

    def new_library(self) -> Any:
        """The per-engine cache of loaded files (re-read only when a file changes)."""

    def rows(self, library: Any, folders: Sequence[Path], *, text_width: int | None) -> list[dict[str, Any]]:
        """One row per file found: `name`, `path`, `status` ("loaded" | "skipped"), `reason`, ..."""

    def summary(self, row: dict[str, Any]) -> str:
        """What `emaki models` shows of a loaded row, after its name and hash."""

    def activate(self, library: Any, folders: Sequence[Path], tags: Sequence[NetworkTag],
                 run: Run, handle: ModelHandle) -> dict[str, object]:
        """Load what `tags` (and the run's params' own setting of this kind) ask for, patch the
        model through `handle`, add embeddings the files bundle to `run.embeddings`; return the
        infotext fields of what was applied."""


@dataclass(frozen=True)
class EmbeddingKind:
    """Textual-inversion embeddings (specs §3): used by name in either prompt; the prompt
    encoder looks them up (`PromptEncoder(embeddings=...)`), nothing is patched."""

    name: str = "embedding"
    title: str = "Embeddings"
    tag: str | None = None
    tag_aliases: tuple[str, ...] = ()
    folder: FolderKind = "embeddings"

    def new_library(self) -> EmbeddingLibrary:
        return EmbeddingLibrary()

    def rows(self, library: EmbeddingLibrary, folders: Sequence[Path], *, text_width: int | None) -> list[dict[str, Any]]:
        scan = library.scan(folders, expected_width=text_width)
        rows = [{"name": e.name, "path": str(e.path), "status": "loaded", "vectors": e.num_vectors,
                 "width": e.width, "step": e.step, "hash": e.shorthash, "reason": None,
                 "provenance": e.provenance}
                for e in scan.loaded.values()]
        rows += [{"name": s.name, "path": str(s.path), "status": "skipped", "vectors": None, "width": None,
                  "step": None, "hash": None, "reason": s.reason, "provenance": None} for s in scan.skipped]
        return rows

    def summary(self, row: dict[str, Any]) -> str:
        step = "" if row["step"] is None else f", step {row['step']}"
        return f"{row['vectors']} vectors × {row['width']}{step}{trained_on(row.get('provenance'))}"

    def activate(self, library: EmbeddingLibrary, folders: Sequence[Path], tags: Sequence[NetworkTag],
                 run: Run, handle: ModelHandle) -> dict[str, object]:
        return {}  # the conditioning stage reads them; `TI hashes` comes from what it used


def trained_on(record: dict[str, Any] | None) -> str:
    """`, trained by emaki on <model> [hash] from N images (sha256 …)` for a file emaki trained."""
    if not record:
        return ""
    model = record.get("base_model") or "?"
    digest = str(record.get("dataset_sha256") or "")[:12]
    return (f", trained by {record.get('trainer', 'emaki')} on {model} [{record.get('base_model_hash') or '-'}] "
            f"from {record.get('dataset_size', '?')} images (sha256 {digest}…)")


@dataclass(frozen=True)
class HypernetworkKind:
    """Hypernetworks (specs §1): `<hypernet:name:strength>` tags, then the `hypernetwork`
    setting; applied through attention processors on the run's handle."""

    name: str = "hypernetwork"
    title: str = "Hypernetworks"
    tag: str | None = "hypernet"
    tag_aliases: tuple[str, ...] = ()
    folder: FolderKind = "hypernetworks"

    def new_library(self) -> HypernetworkLibrary:
        return HypernetworkLibrary()

    def rows(self, library: HypernetworkLibrary, folders: Sequence[Path], *, text_width: int | None) -> list[dict[str, Any]]:
        rows = []
        for path in walk_files(folders, (".pt",)):
            row: dict[str, Any] = {"name": path.stem, "path": str(path)}
            try:
                hn = library.load(str(path), list(folders))  # cached until the file changes
                row |= {"status": "loaded", "sizes": hn.sizes, "layer_structure": hn.layer_structure,
                        "activation": hn.activation_func, "step": hn.step, "hash": hn.shorthash, "reason": None,
                        "provenance": hn.provenance}
            except EmakiError as e:
                row |= {"status": "skipped", "sizes": None, "layer_structure": None, "activation": None,
                        "step": None, "hash": None, "reason": str(e), "provenance": None}
            rows.append(row)
        return rows

    def summary(self, row: dict[str, Any]) -> str:
        return (f"sizes {row['sizes']}, structure {row['layer_structure']}, activation {row['activation']}"
                f"{trained_on(row.get('provenance'))}")

    def activate(self, library: HypernetworkLibrary, folders: Sequence[Path], tags: Sequence[NetworkTag],
                 run: Run, handle: ModelHandle) -> dict[str, object]:
        params = run.params
        chosen = [(tag.name, tag.multiplier) for tag in tags]
        if params.hypernetwork:
            chosen.append((params.hypernetwork, params.hypernetwork_strength))
        if not chosen:
            return {}
        loaded = [(library.load(name, list(folders)), strength) for name, strength in chosen]
        handle.on_exit(apply_hypernetworks(handle.components.unet, loaded).remove)
        # Only the setting's hypernetwork is written as fields; tags stay in the prompt (A1111).
        return {"Hypernet hash": loaded[-1][0].shorthash} if params.hypernetwork else {}


@dataclass(frozen=True)
class LoraKind:
    """LoRA / LyCORIS (issue 15): `<lora:name:te[:unet[:dyn]]>` (or `<lyco:...>`) tags patch the
    UNet and text-encoder weights through the run's handle; `Lora hashes` goes in the infotext.
    Embeddings bundled in a file join the run's (`run.embeddings`) while the file is in the
    prompt, as A1111 registers those of loaded networks."""

    name: str = "lora"
    title: str = "LoRAs"
    tag: str | None = "lora"
    tag_aliases: tuple[str, ...] = ("lyco",)
    folder: FolderKind = "loras"

    def new_library(self) -> LoraLibrary:
        return LoraLibrary()

    def rows(self, library: LoraLibrary, folders: Sequence[Path], *, text_width: int | None) -> list[dict[str, Any]]:
        return library.rows(folders)

    def summary(self, row: dict[str, Any]) -> str:
        parts = [row["kind"] + (f", rank {row['rank']}" if row["rank"] else ""),
                 row["base_model"] or row["sd_version"] or "base model not given"]
        if row["alias"] != row["name"]:
            parts.append(f"alias {row['alias']}")
        if row["trigger_words"]:
            parts.append("tags: " + ", ".join(row["trigger_words"][:5]))
        if row["embeddings"]:
            parts.append("embeddings: " + ", ".join(row["embeddings"]))
        if row["unmatched"]:
            parts.append(f"{row['unmatched']} keys match no SD 1.x module")
        return "; ".join(parts)

    def activate(self, library: LoraLibrary, folders: Sequence[Path], tags: Sequence[NetworkTag],
                 run: Run, handle: ModelHandle) -> dict[str, object]:
        if not tags:
            return {}
        chosen = []
        for tag in tags:
            path = library.find(tag.name, folders)
            if path is None:
                where = ", ".join(str(f) for f in folders) or "no folders"
                raise ParamsError(f"lora {tag.name!r}: no such file in {where} (prompt tag {tag.text})")
            te, unet, dyn = lora_strengths(tag)
            chosen.append(ChosenLora(library.load(path), te, unet, dyn, tag.name))
            for name, embedding in chosen[-1].network.embeddings.items():  # usable while it is in the prompt
                run.embeddings.setdefault(name, BundledEmbedding(name, embedding.vectors, tag.name, str(path)))

        def replace(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
            if getattr(module, name) is not None:
                handle.replace_weight(module, name, value)
                return
            setattr(module, name, torch.nn.Parameter(value, requires_grad=False))  # a bias the layer lacked
            handle.on_exit(lambda: setattr(module, name, None))

        model = handle.components.unet  # what `library.kept` knows a model by
        kept = library.kept.get(model)
        if kept is None or not kept.serves(chosen):
            library.kept.pop(model, None)  # the last set's weights go before the new ones are made
            kept = library.kept[model] = KeptPatches.make(chosen, model_targets(handle.components))
        for module, name, value in kept.weights:
            replace(module, name, value)
        hashes = lora_hashes(chosen, lambda network: library.shorthash(network.file.path))
        return {"Lora hashes": hashes} if hashes else {}


@dataclass(frozen=True)
class BundledEmbedding:
    """An embedding stored in a LoRA file; `TI hashes` names the LoRA in place of a file hash
    (A1111's `BundledTIHash`)."""

    name: str
    vectors: torch.Tensor
    shorthash: str  # the LoRA as the prompt tag names it
    source: str = ""  # the LoRA file, for messages


EMBEDDINGS = EmbeddingKind()
NETWORK_KINDS: tuple[NetworkKind, ...] = (EMBEDDINGS, HypernetworkKind(), LoraKind())


def tag_kinds(kind: NetworkKind) -> tuple[str, ...]:
    """The prompt tag kinds that select `kind`."""
    return (kind.tag, *kind.tag_aliases) if kind.tag else ()


def kind_for_tag(tag: str) -> NetworkKind:
    for kind in NETWORK_KINDS:
        if tag in tag_kinds(kind):
            return kind
    known = ", ".join(f"<{k.tag}:...>" for k in NETWORK_KINDS if k.tag)
    raise ParamsError(f"prompt: emaki has no network kind for <{tag}:...> tags (it has: {known})")


class NetworkLibraries:
    """An engine's loaded network files, one library per kind, over the workspace's folders, and
    what the embeddings its runs used read as (`readings`: each read once per model)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._libraries = {kind.name: kind.new_library() for kind in NETWORK_KINDS}
        self.readings = EmbeddingReadings()

    def library(self, kind: NetworkKind) -> Any:
        return self._libraries[kind.name]

    def folders(self, kind: NetworkKind) -> list[Path]:
        return self.workspace.folders(kind.folder)

    def embeddings(self, text_width: int) -> EmbeddingScan:
        """The embeddings that fit a text encoder of `text_width`."""
        library: EmbeddingLibrary = self.library(EMBEDDINGS)
        return library.scan(self.folders(EMBEDDINGS), expected_width=text_width)

    def rows(self, kind: NetworkKind, text_width: int | None) -> list[dict[str, Any]]:
        """`kind`'s rows; embeddings of another width than `text_width` (None: any) are skipped."""
        return kind.rows(self.library(kind), self.folders(kind), text_width=text_width)


class NetworksExtension(Extension):
    """Activates every network kind a run asks for (prompt tags and settings); a tag of a kind
    emaki does not have is an error, not silently dropped."""

    def __init__(self, libraries: NetworkLibraries, tags: Sequence[NetworkTag]) -> None:
        self.libraries = libraries
        self.tags = list(tags)
        self.fields: dict[str, object] = {}

    def plan(self, run: Run) -> None:
        for tag in self.tags:
            kind_for_tag(tag.kind)

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        for kind in NETWORK_KINDS:
            tags = [tag for tag in self.tags if tag.kind in tag_kinds(kind)]
            self.fields |= kind.activate(self.libraries.library(kind), self.libraries.folders(kind), tags,
                                         run, handle)

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return self.fields

"""Which face restorers a workspace has, and loading them through spandrel.

A restorer runs on aligned 512×512 faces, so it is usable only with the face detector's file
next to it. Files are looked for in the workspace's `face-restorers` folder and, with an A1111
install, in its `models/GFPGAN` and `models/Codeformer` (where A1111 keeps them and facexlib's
detector). spandrel 0.4 builds GFPGAN (Apache-2.0, in spandrel itself); CodeFormer is only in
`spandrel_extra_arches` (CodeFormer's S-Lab licence, non-commercial), which emaki does not
install: a CodeFormer file is named as present but refused with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emaki.errors import ModelLoadError, ParamsError
from emaki.faces.loading import DETECTOR_FILE
from emaki.networks import walk_files
from emaki.upscalers.loading import read_state_dict
from emaki.upscalers.spandrel_import import import_spandrel
from emaki.workspace import Workspace

# What A1111 v1.10 downloads for each restorer (the name a user will have).
RESTORER_FILES = {"GFPGAN": "GFPGANv1.4.pth", "CodeFormer": "codeformer-v0.1.0.pth"}
A1111_FOLDERS = ("models/GFPGAN", "models/Codeformer")
SUFFIXES = (".pth", ".safetensors")
NOISE_SEED = 0  # GFPGAN's StyleGAN decoder adds noise; a fixed seed makes a restoration repeatable

Restorer = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, 512, 512) in [-1, 1] → same


def restorer_folders(workspace: Workspace) -> list[Path]:
    """Where restorer and detector files are looked for, emaki's own folder first."""
    folders = [workspace.home / "face-restorers"]
    if workspace.a1111 is not None:
        folders += [workspace.a1111 / sub for sub in A1111_FOLDERS]
    return folders


def _files(workspace: Workspace) -> list[Path]:
    existing = [folder for folder in restorer_folders(workspace) if folder.is_dir()]
    return sorted(walk_files(existing, SUFFIXES), key=lambda path: path.name.lower())


@dataclass(frozen=True)
class FaceFiles:
    """The files found: the detector (or None) and each restorer's file by name."""

    detector: Path | None
    restorers: dict[str, Path]


def find_face_files(workspace: Workspace) -> FaceFiles:
    """The detector file and, per restorer, the first file named after it (`GFPGAN*`,
    `codeformer*`, as A1111 picks them)."""
    files = _files(workspace)
    detector = next((path for path in files if path.stem.lower() == Path(DETECTOR_FILE).stem.lower()), None)
    restorers: dict[str, Path] = {}
    for name in RESTORER_FILES:
        found = next((path for path in files if path.name.lower().startswith(name.lower())), None)
        if found is not None:
            restorers[name] = found
    return FaceFiles(detector, restorers)


def missing_files_message(workspace: Workspace, field: str, restorer: str | None = None,
                          files: FaceFiles | None = None) -> str | None:
    """One line naming what `field` would need and is not there (None when all is there);
    `files`: what `find_face_files` found already."""
    files = files or find_face_files(workspace)
    folder = restorer_folders(workspace)[0]
    wanted = [restorer] if restorer else list(RESTORER_FILES)
    present = [name for name in wanted if name in files.restorers]
    needs = []
    if not present:
        needs.append("a restorer model (" + " or ".join(f"{RESTORER_FILES[name]} ({name})" for name in wanted) + ")")
    if files.detector is None:
        needs.append(f"facexlib's face detector {DETECTOR_FILE}, which finds and aligns the faces first")
    if not needs:
        return None
    there = ", ".join(path.name for path in [*files.restorers.values(), *([files.detector] if files.detector else [])])
    return (f"{field}: face restoration needs {' and '.join(needs)} in {folder}"
            f"{' (or an A1111 models/GFPGAN folder with --a1111)' if workspace.a1111 is None else ''}; "
            f"{there + ' found there' if there else 'nothing is there'}; emaki downloads nothing")


def _spandrel_restorer(path: Path) -> Any:
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.MAIN_REGISTRY.load(spandrel.canonicalize_state_dict(read_state_dict(path)))
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(f"{path}: not a face restorer spandrel knows: CodeFormer needs spandrel_extra_arches "
                             "(non-commercial licence), which emaki does not install; use a GFPGAN file") from None
    if descriptor.architecture.id != "GFPGAN":
        raise ModelLoadError(f"{path}: a {descriptor.architecture.name} model, not GFPGAN")
    return descriptor.model.eval()


def load_restorer(path: str | Path, device: torch.device | None = None) -> Restorer:
    """The GFPGAN model in `path` (on `device`, float32) as a function on aligned faces (A1111
    v1.10's `GFPGANFaceRestorer.restore_face`: the final image, not the intermediate RGBs)."""
    network = _spandrel_restorer(Path(path)).to(device or torch.device("cpu"))

    parameter = next(network.parameters())

    @torch.no_grad()
    def restore(face: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NOISE_SEED)
            out = network(face.to(parameter.device, parameter.dtype), return_rgb=False)[0]
        return out.float().cpu()

    return restore


def refuse_unrunnable(name: str, field: str) -> None:
    """CodeFormer's file can be there, but emaki cannot run it: say so rather than skip it."""
    if name == "CodeFormer":
        raise ParamsError(f"{field}: emaki restores faces with GFPGAN only: CodeFormer's architecture is in "
                          "spandrel_extra_arches under CodeFormer's non-commercial licence, which emaki does not "
                          f"use; put {RESTORER_FILES['GFPGAN']} in the face restorers folder and use GFPGAN")


def check_restorer_name(name: str, field: str) -> str:
    """A1111's `face_restoration_model` value, as one of emaki's restorer names."""
    for known in RESTORER_FILES:
        if known.lower() == name.lower():
            return known
    raise ParamsError(f"{field}: unknown face restorer {name!r}; expected {' or '.join(RESTORER_FILES)}")

"""Face restoration on an engine: the workspace's detector and restorer files, loaded once and
kept for the next picture (a folder of images, a batch), run on the engine's device."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from emaki.engine.run import Batch, Extension, Run
from emaki.errors import ModelLoadError, ParamsError
from emaki.faces import (
    RetinaFace,
    check_restorer_name,
    find_face_files,
    find_faces,
    load_detector,
    load_restorer,
    missing_files_message,
    restore_faces,
)
from emaki.faces.restorers import FaceFiles, Restorer, refuse_unrunnable
from emaki.params import GenerationParams
from emaki.workspace import Workspace


def _file_key(path: Path, device: torch.device) -> tuple[object, ...]:
    try:
        stat = path.stat()
    except OSError:
        raise ModelLoadError(f"{path}: no such face model file") from None
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(device)


class FaceRestoration:
    """The face detector and the last restorer an engine loaded (float32: the detector's
    scores and GFPGAN's noise are what A1111 computes in full precision)."""

    def __init__(self) -> None:
        self._detector: tuple[tuple[object, ...], RetinaFace] | None = None
        self._restorer: tuple[tuple[object, ...], Restorer] | None = None

    def check(self, workspace: Workspace, restorer: str, field: str) -> str:
        """The restorer's name, or an error naming the file that is missing and where it goes."""
        return self._checked(workspace, restorer, field)[0]

    def _checked(self, workspace: Workspace, restorer: str, field: str) -> tuple[str, FaceFiles]:
        name = check_restorer_name(restorer, field)
        refuse_unrunnable(name, field)
        files = find_face_files(workspace)
        message = missing_files_message(workspace, field, name, files)
        if message is not None:
            raise ParamsError(message)
        return name, files

    def restore(self, workspace: Workspace, image: Image.Image, *, restorer: str, visibility: float,
                device: torch.device, field: str = "restore_faces") -> Image.Image:
        """`image` with its faces restored by `restorer` ("GFPGAN"), blended in by `visibility`."""
        name, files = self._checked(workspace, restorer, field)
        assert files.detector is not None  # checked above
        detector = self._load_detector(files.detector, device)
        model = self._load_restorer(files.restorers[name], device)
        return restore_faces(image, lambda picture: find_faces(detector, picture), model, visibility)

    def _load_detector(self, path: Path, device: torch.device) -> RetinaFace:
        key = _file_key(path, device)
        if self._detector is None or self._detector[0] != key:
            self._detector = None  # the old model goes before the new one loads
            self._detector = key, load_detector(path).to(device)
        return self._detector[1]

    def _load_restorer(self, path: Path, device: torch.device) -> Restorer:
        key = _file_key(path, device)
        if self._restorer is None or self._restorer[0] != key:
            self._restorer = None
            self._restorer = key, load_restorer(path, device)
        return self._restorer[1]


class RestoreFaces(Extension):
    """`restore_faces`: every decoded picture's faces restored with GFPGAN (A1111 restores them
    right after decoding, before the inpainting composite and the saving)."""

    def __init__(self, faces: FaceRestoration, workspace: Workspace, device: torch.device) -> None:
        self.faces, self.workspace, self.device = faces, workspace, device

    def plan(self, run: Run) -> None:
        self.faces.check(self.workspace, "GFPGAN", "restore_faces")  # before the first step, not after

    def after_decode(self, run: Run, batch: Batch, images: list[Image.Image]) -> list[Image.Image]:
        return [self.faces.restore(self.workspace, image, restorer="GFPGAN", visibility=1.0, device=self.device)
                for image in images]


def face_extensions(params: GenerationParams, faces: FaceRestoration | None, workspace: Workspace,
                    device: torch.device) -> list[Extension]:
    """The face restoration step when the params ask for it (with the engine's loaded models,
    or models loaded for this run)."""
    return [RestoreFaces(faces or FaceRestoration(), workspace, device)] if params.restore_faces else []

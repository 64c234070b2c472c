"""Stand-ins for face restoration's models, for tests that are about what is around them (the
surfaces, the pipeline): a detector that finds the faces a test gives, a "GFPGAN" that inverts the
colours, and files where the engine looks for the real ones. tests/faces/ tests the real models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emaki.faces import DetectedFace
from emaki.faces.alignment import FFHQ_TEMPLATE

FACE_FILES = ("GFPGANv1.4.pth", "detection_Resnet50_Final.pth")


def face_at(box: tuple[float, float, float, float], scale: float, centre: tuple[float, float]) -> DetectedFace:
    """A face in `box` whose five landmarks are the 512² template's, scaled by `scale` around `centre`."""
    return DetectedFace(box, 0.99, (FFHQ_TEMPLATE - 256) * scale + np.array(centre))


def put_face_files(folder: Path, *names: str) -> Path:
    """Files named as the restorer and the detector (not models: the stand-ins never read them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"weights")
    return folder


def use_stand_ins(patch: pytest.MonkeyPatch, faces: Callable[[Image.Image], list[DetectedFace]]) -> None:
    """The engine's detector finds `faces(picture)`; its "GFPGAN" inverts the colours."""
    import emaki.engine.faces as engine_faces

    patch.setattr(engine_faces, "load_detector", lambda path: torch.nn.Identity())
    patch.setattr(engine_faces, "find_faces", lambda detector, picture: faces(picture))
    patch.setattr(engine_faces, "load_restorer", lambda path, device: lambda crop: -crop)

"""Face restoration of a whole picture, as A1111 v1.10's `restore_with_face_helper`:

    find the faces (RetinaFace, `emaki.faces.detection.find_faces`)
    for each: align to the 512×512 template, scale to [-1, 1], restore, clamp, back to 0-255 (truncated)
    paste every face back with its soft mask (`emaki.faces.paste`)
    blend with the input by `visibility` (A1111's extras; generation uses 1)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from emaki.faces.alignment import align_face
from emaki.faces.detection import DetectedFace
from emaki.faces.paste import paste_faces

FaceFinder = Callable[[Image.Image], list[DetectedFace]]
Restorer = Callable[[torch.Tensor], torch.Tensor]


def restore_faces(image: Image.Image, find: FaceFinder, restorer: Restorer, visibility: float = 1.0) -> Image.Image:
    """`image` (RGB) with every face `find` reports restored by `restorer`; unchanged when none is found."""
    picture = image.convert("RGB")
    faces = find(picture)
    if not faces or visibility <= 0:
        return picture
    pixels = torch.from_numpy(np.asarray(picture).transpose(2, 0, 1).copy()).float()
    restored = []
    for face in faces:
        crop, matrix = align_face(pixels, face.landmarks)
        out = restorer((crop.float() / 255 - 0.5)[None] / 0.5)[0].float().cpu()
        restored.append((((out.clamp(-1, 1) + 1) / 2 * 255).floor(), matrix))
    pasted = paste_faces(pixels, restored).to(torch.uint8).numpy().transpose(1, 2, 0)
    result = Image.fromarray(np.ascontiguousarray(pasted), "RGB")
    return result if visibility >= 1 else Image.blend(picture, result, visibility)

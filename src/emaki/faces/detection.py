"""Faces and their five landmarks from RetinaFace's outputs, as facexlib's `RetinaFace.detect_faces`
and A1111's call of it (`get_face_landmarks_5(resize=640, eye_dist_threshold=5)`, confidence 0.97).

Prior boxes: per pyramid level (strides 8, 16, 32; anchor sides 16/32, 64/128, 256/512 pixels),
one box per cell and side, centred on the cell. Decoding (SSD's, variances 0.1 and 0.2):

    centre = prior_c + offset_c · 0.1 · prior_size      size = prior_size · exp(offset_s · 0.2)
    landmark_k = prior_c + offset_k · 0.1 · prior_size

then boxes above the confidence threshold, by falling score, go through greedy NMS (IoU 0.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from emaki.faces.retinaface import RetinaFace

STEPS = (8, 16, 32)
ANCHOR_SIDES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)
A1111_CONFIDENCE = 0.97
A1111_SHORT_SIDE = 640
A1111_MIN_EYE_DISTANCE = 5.0
NMS_IOU = 0.4


@dataclass(frozen=True)
class DetectedFace:
    """A face: box (x1, y1, x2, y2), score, and landmarks (5, 2) — left eye, right eye, nose,
    left and right mouth corner — in the image's pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """(N, 4) priors as (cx, cy, w, h), relative to the image, in the network's output order."""
    levels = []
    for step, sides in zip(STEPS, ANCHOR_SIDES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid((torch.arange(rows, dtype=torch.float64) + 0.5) * step / height,
                                (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width, indexing="ij")
        per_side = [torch.stack([cx, cy, torch.full_like(cx, side / width), torch.full_like(cx, side / height)], -1)
                    for side in sides]
        levels.append(torch.stack(per_side, dim=2).reshape(-1, 4))  # (row, col, side) order
    return torch.cat(levels).float()


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(N, 4) offsets → (N, 4) corners (x1, y1, x2, y2), relative to the image."""
    centres = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCES[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(N, 10) offsets → (N, 10) points (x, y five times), relative to the image."""
    points = priors[:, None, :2] + offsets.reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]
    return points.reshape(-1, 10)


def non_maximum_suppression(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> list[int]:
    """Greedy NMS: keep the best box, drop those overlapping it by more than `iou`, repeat.
    Areas are (x2 - x1)·(y2 - y1), as torchvision's `nms`."""
    x1, y1, x2, y2 = boxes.double().unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    for index in torch.argsort(scores, descending=True, stable=True).tolist():
        if not alive[index]:
            continue
        keep.append(index)
        overlap = ((torch.minimum(x2[index], x2) - torch.maximum(x1[index], x1)).clamp(min=0)
                   * (torch.minimum(y2[index], y2) - torch.maximum(y1[index], y1)).clamp(min=0))
        alive &= overlap / (areas[index] + areas - overlap) <= iou
    return keep


def to_network_input(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) RGB 0-255 → (1, 3, H, W) BGR float32 minus the Caffe mean."""
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.float32)).permute(2, 0, 1)[None]
    return bgr - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)


@torch.no_grad()
def detect_faces(model: RetinaFace, rgb: np.ndarray, *, confidence: float, iou: float = NMS_IOU,
                 ) -> list[DetectedFace]:
    """facexlib's `detect_faces(image, conf_threshold, nms_threshold, use_origin_size=True)` on an
    (H, W, 3) RGB array: faces scoring above `confidence`, best first, after NMS."""
    height, width = rgb.shape[:2]
    parameter = next(model.parameters())
    inputs = to_network_input(rgb).to(parameter.device, parameter.dtype)
    offsets, classes, landmark_offsets = (out[0].float().cpu() for out in model(inputs))
    priors = prior_boxes(height, width)
    boxes = decode_boxes(offsets, priors) * torch.tensor([width, height] * 2)
    landmarks = decode_landmarks(landmark_offsets, priors) * torch.tensor([width, height] * 5)
    scores = classes[:, 1]
    chosen = torch.nonzero(scores > confidence).flatten()
    chosen = chosen[torch.argsort(scores[chosen], descending=True, stable=True)]
    kept = chosen[non_maximum_suppression(boxes[chosen], scores[chosen], iou)] if len(chosen) else chosen
    return [DetectedFace(tuple(boxes[i].tolist()), float(scores[i]), landmarks[i].reshape(5, 2).numpy())  # type: ignore[arg-type]
            for i in kept.tolist()]


def find_faces(model: RetinaFace, image: Image.Image) -> list[DetectedFace]:
    """A1111's detection: the picture resized so its short side is 640 (Lanczos), faces above
    0.97, coordinates scaled back, faces whose eyes are under 5 pixels apart dropped."""
    scale = min(image.width, image.height) / A1111_SHORT_SIDE
    size = (int(image.width / scale), int(image.height / scale))
    resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS) if size != image.size else image.convert("RGB")
    found = []
    for face in detect_faces(model, np.asarray(resized), confidence=A1111_CONFIDENCE):
        landmarks = face.landmarks * scale
        if np.linalg.norm(landmarks[0] - landmarks[1]) < A1111_MIN_EYE_DISTANCE:
            continue
        box = tuple(value * scale for value in face.box)
        found.append(DetectedFace(box, face.score, landmarks))  # type: ignore[arg-type]
    return found

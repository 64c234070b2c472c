"""Aligning a face to the 512×512 FFHQ five-point template and warping images by 2×3 affine maps,
as facexlib's `FaceRestoreHelper.align_warp_face` (OpenCV's `estimateAffinePartial2D` and
`warpAffine`, bilinear, constant border) — here with numpy least squares and torch `grid_sample`.

A similarity transform maps a source point (x, y) to (a·x − b·y + tx, b·x + a·y + ty); the four
unknowns solve the ten equations of the five landmark pairs in the least-squares sense.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FACE_SIZE = 512
# facexlib's template for 512×512 crops: eyes, nose tip, mouth corners (FFHQ's alignment).
FFHQ_TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                          [201.26117, 371.41043], [313.08905, 371.15118]])
# facexlib's grey outside the picture, (135, 133, 132) in OpenCV's BGR order.
CROP_BORDER_RGB = (132.0, 133.0, 135.0)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 rotation + uniform scale + translation taking `source` points nearest to `target`."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    rows = []
    for (x, y) in source:
        rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), target.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2×3 map undoing `matrix`."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(image: torch.Tensor, matrix: np.ndarray, size: tuple[int, int],
                border: tuple[float, ...] | float = 0.0) -> torch.Tensor:
    """(C, H, W) float `image` through the forward map `matrix` onto a (C, height, width) canvas,
    `size` = (width, height): each output pixel samples the input bilinearly at matrix⁻¹·(x, y);
    pixels mapped from outside the input take `border` (blended at the edge, as OpenCV's)."""
    width, height = size
    channels, in_height, in_width = image.shape
    back = torch.from_numpy(invert_affine(matrix))
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ back.T  # (H, W, 2) input pixel coordinates
    # align_corners=True puts -1 and 1 on the centres of the first and last pixel.
    grid = torch.stack([points[..., 0] * 2 / max(in_width - 1, 1) - 1,
                        points[..., 1] * 2 / max(in_height - 1, 1) - 1], dim=-1)
    fill = torch.as_tensor(border, dtype=torch.float64).reshape(-1, 1, 1).expand(channels, 1, 1)
    shifted = (image.double() - fill)[None]  # zero padding of (image - border) = border outside
    out = F.grid_sample(shifted, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return (out + fill).to(image.dtype)


def align_face(image: torch.Tensor, landmarks: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The 512×512 crop of the face whose five landmarks are given ((3, 512, 512), same dtype as
    `image`, 0-255 values rounded as OpenCV's 8-bit warp) and the affine map that made it."""
    matrix = similarity_transform(landmarks, FFHQ_TEMPLATE)
    crop = warp_affine(image.double(), matrix, (FACE_SIZE, FACE_SIZE), CROP_BORDER_RGB)
    return crop.round().clamp(0, 255), matrix

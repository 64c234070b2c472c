"""Pasting restored 512×512 faces back into the picture, as facexlib's
`FaceRestoreHelper.paste_faces_to_input_image` without face parsing (`use_parse=False`):

    face   = inverse warp of the restored crop (black outside)
    mask   = inverse warp of an all-ones 512×512 square, eroded by 2×2
    soft   = mask eroded again by 2·e and Gaussian-blurred with a (2·e + 1) kernel,
             e = ⌊√(mask area)⌋ // 20 (the edge width grows with the face)
    result = soft · mask · face + (1 − soft) · result     (face after face; truncated to 8 bits at the end)

Erosion treats pixels beyond the canvas as 1, and the blur mirrors at the edges (OpenCV's
defaults), so a face touching the border stays pasted up to it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from emaki.faces.alignment import FACE_SIZE, invert_affine, warp_affine

# OpenCV's fixed kernels for odd sizes up to 7 when no sigma is given (getGaussianKernel).
_SMALL_GAUSSIANS = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) minimum over a size×size window anchored at its centre (size // 2); 0 means
    OpenCV's default 3×3."""
    size = size or 3
    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(mask[None, None], (before, after, before, after), value=math.inf)
    return -F.max_pool2d(-padded, size, stride=1)[0, 0]


def gaussian_kernel(size: int) -> torch.Tensor:
    """OpenCV's 1-D Gaussian for an odd `size` and sigma 0: σ = 0.3·((size − 1)/2 − 1) + 0.8."""
    if size in _SMALL_GAUSSIANS:
        return torch.tensor(_SMALL_GAUSSIANS[size], dtype=torch.float64)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-x * x / (2 * sigma * sigma))
    return weights / weights.sum()


def gaussian_blur(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) separable Gaussian blur, mirrored at the edges without repeating the edge pixel."""
    if size <= 1:
        return mask
    kernel = gaussian_kernel(size).to(mask.dtype)
    half = size // 2
    image = mask[None, None]
    pad_x, pad_y = min(half, mask.shape[1] - 1), min(half, mask.shape[0] - 1)
    image = F.pad(image, (pad_x, pad_x, 0, 0), mode="reflect") if pad_x == half else _edge_pad(image, half, 3)
    image = F.conv2d(image, kernel.view(1, 1, 1, -1))
    image = F.pad(image, (0, 0, pad_y, pad_y), mode="reflect") if pad_y == half else _edge_pad(image, half, 2)
    return F.conv2d(image, kernel.view(1, 1, -1, 1))[0, 0]


def _edge_pad(image: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    """Padding for a picture narrower than the kernel (mirroring needs more pixels than there are)."""
    pad = (amount, amount, 0, 0) if dim == 3 else (0, 0, amount, amount)
    return F.pad(image, pad, mode="replicate")


def soft_mask(matrix: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(eroded square mask, soft mask), both (H, W) float32, for a face cropped by `matrix`."""
    square = torch.ones(1, FACE_SIZE, FACE_SIZE, dtype=torch.float32)
    mask = erode(warp_affine(square, invert_affine(matrix), size)[0], 2)
    edge = int(float(mask.double().sum()) ** 0.5) // 20
    return mask, gaussian_blur(erode(mask, edge * 2), edge * 2 + 1)


def paste_faces(image: torch.Tensor, faces: list[tuple[torch.Tensor, np.ndarray]]) -> torch.Tensor:
    """(3, H, W) 0-255 picture with each (restored crop (3, 512, 512) 0-255, matrix that cropped
    it) pasted back; float32, truncated to whole values as facexlib's `astype(uint8)`."""
    height, width = image.shape[1:]
    result = image.float()
    for crop, matrix in faces:
        face = warp_affine(crop.double(), invert_affine(matrix), (width, height)).round().clamp(0, 255).float()
        mask, soft = soft_mask(matrix, (width, height))
        result = soft * (mask * face) + (1 - soft) * result
    return result.clamp(0, 255).floor()

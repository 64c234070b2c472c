"""Aligning faces to the FFHQ template and pasting restored faces back (facexlib's
`use_parse=False` path): a known similarity is recovered, pixels the face's mask does not reach
stay identical, and an identity restorer gives the picture back within rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emaki.faces import DetectedFace, restore_faces
from emaki.faces.alignment import (
    FFHQ_TEMPLATE,
    align_face,
    invert_affine,
    similarity_transform,
    warp_affine,
)
from emaki.faces.paste import erode, gaussian_kernel, paste_faces, soft_mask


def landmarks_at(centre: tuple[float, float], scale: float, angle: float) -> np.ndarray:
    """The template's five points shrunk by `scale`, turned by `angle`, centred on `centre`."""
    turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (FFHQ_TEMPLATE - 256) @ turn.T + np.array(centre)


def picture(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8, width // 8, 3))
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8), "RGB")


def test_similarity_transform_recovers_rotation_scale_and_shift():
    points = landmarks_at((80, 60), 0.2, 0.3)
    matrix = similarity_transform(points, FFHQ_TEMPLATE)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - FFHQ_TEMPLATE).max() < 1e-6
    assert np.hypot(*matrix[0, :2]) == pytest.approx(5.0)  # 1 / 0.2
    assert np.allclose(invert_affine(matrix) @ np.append(FFHQ_TEMPLATE[0], 1), points[0])


def test_warp_samples_through_the_inverse_map_and_fills_outside():
    image = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)
    shifted = warp_affine(image, np.array([[1.0, 0, 1], [0, 1, 0]]), (4, 3), border=99.0)
    assert shifted[0, :, 0].tolist() == pytest.approx([99.0] * 3)  # nothing maps from left of the picture
    assert torch.allclose(shifted[0, :, 1:], image[0, :, :3])
    half = warp_affine(image, np.array([[1.0, 0, 0.5], [0, 1, 0]]), (4, 3))
    assert half[0, 0, 1].item() == pytest.approx(0.5)  # between pixels 0 and 1


def test_erosion_and_opencvs_gaussian_kernels():
    mask = torch.zeros(5, 5)
    mask[1:4, 1:4] = 1
    assert erode(mask, 3).sum() == 1 and erode(mask, 3)[2, 2] == 1
    assert erode(torch.ones(3, 3), 2).sum() == 9  # outside the canvas counts as 1
    assert gaussian_kernel(5).tolist() == [0.0625, 0.25, 0.375, 0.25, 0.0625]
    big = gaussian_kernel(11)
    sigma = 0.3 * (5 - 1) + 0.8
    assert big.sum().item() == pytest.approx(1.0) and big[6] / big[5] == pytest.approx(np.exp(-1 / (2 * sigma**2)))


def test_pasting_back_an_unchanged_face_returns_the_picture():
    image = picture()
    pixels = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).float()
    crop, matrix = align_face(pixels, landmarks_at((80, 60), 0.15, 0.2))
    pasted = paste_faces(pixels, [(crop, matrix)])
    _, soft = soft_mask(matrix, (160, 120))
    outside = soft == 0
    assert outside.any() and torch.equal(pasted[:, outside], pixels[:, outside])  # untouched, bit for bit
    # inside, the face went through two bilinear warps: sharp block edges blur a little
    assert (pasted - pixels).abs().mean() < 2.0


def test_restore_faces_changes_the_face_only_and_blends_by_visibility():
    image = picture(seed=1)
    face = DetectedFace((40, 20, 120, 100), 0.99, landmarks_at((80, 60), 0.15, -0.1))

    def invert(crop: torch.Tensor) -> torch.Tensor:
        assert crop.shape == (1, 3, 512, 512) and crop.min() >= -1 and crop.max() <= 1
        return -crop

    restored = np.asarray(restore_faces(image, lambda _: [face], invert)).astype(int)
    original = np.asarray(image).astype(int)
    centre = tuple(int(v) // 8 * 8 + 4 for v in face.landmarks[2])  # the middle of the block at the nose
    assert abs(restored[centre[1], centre[0]] - (255 - original[centre[1], centre[0]])).max() <= 2
    assert (restored[:5] == original[:5]).all() and (restored[:, -5:] == original[:, -5:]).all()
    unchanged = restore_faces(image, lambda _: [], invert)
    assert np.array_equal(np.asarray(unchanged), original)
    half = np.asarray(restore_faces(image, lambda _: [face], invert, visibility=0.5)).astype(int)
    assert abs(half[centre[1], centre[0]] - (original[centre[1], centre[0]] + restored[centre[1], centre[0]]) / 2).max() <= 1

"""emaki's face detector, alignment and paste-back against facexlib itself (what A1111 runs).

facexlib needs torchvision and OpenCV, which emaki does not install, so this runs in a throwaway
venv that shares emaki's torch:

    python -m venv /tmp/fxenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/fxenv/lib/python3.11/site-packages/shared.pth
    /tmp/fxenv/bin/pip install --no-deps facexlib==0.3.0 opencv-python-headless torchvision==0.28.0
    /tmp/fxenv/bin/python benchmarks/faces_vs_facexlib.py

The PyPI torchvision wheel's compiled ops do not load next to the CPU torch, so its fake-kernel
registrations are skipped during its import and `torchvision.ops.nms` is replaced by a plain
reference NMS below (facexlib calls nothing else compiled). Everything else is facexlib's code:
a seeded random-init RetinaFace-ResNet50 (its BatchNorm statistics randomised too, so the
scores spread), its state dict saved as a .pth and read by emaki's `load_detector`; both detect
on the same images; the aligned crops and pasted pictures come from facexlib's
`FaceRestoreHelper` (OpenCV) and emaki's torch code given the same landmarks.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order, keep = scores.argsort(descending=True).tolist(), []
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    for i in order:
        if alive[i]:
            keep.append(i)
            w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
            h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
            alive &= ~(w * h / (area[i] + area - w * h) > iou_threshold)
    return torch.tensor(keep, dtype=torch.long)


def _import_torchvision() -> None:
    real = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)  # type: ignore[assignment]
    try:
        import torchvision
    finally:
        torch.library.register_fake = real
    torchvision.ops.nms = _reference_nms


def _facexlib_detector(seed: int):
    from facexlib.detection.retinaface import RetinaFace as FacexlibRetinaFace

    torch.manual_seed(seed)
    model = FacexlibRetinaFace("resnet50", device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    for name, value in model.state_dict().items():
        if name.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=generator) * 2 + 0.5)
        elif name.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    for head in (*model.ClassHead, *model.BboxHead, *model.LandmarkHead):  # unsaturated scores, sane offsets
        head.conv1x1.weight.mul_(0.02)
        head.conv1x1.bias.mul_(0.02)
    return model.eval()


def _images(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((8, 8, 1)))
    gradient = np.stack([*np.meshgrid(np.linspace(0, 255, 311), np.linspace(0, 255, 257)), np.full((257, 311), 90.0)], -1)
    return [rng.integers(0, 256, (240, 320, 3)).astype(np.uint8), smooth.astype(np.uint8), gradient.astype(np.uint8)]


def compare_detection(results: dict[str, float]) -> None:
    from emaki.faces.detection import detect_faces, to_network_input
    from emaki.faces.loading import load_detector

    theirs = _facexlib_detector(seed=17)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "detection_Resnet50_Final.pth"
        torch.save({f"module.{k}": v for k, v in theirs.state_dict().items()}, path)  # as the released file
        ours = load_detector(path)
    for index, rgb in enumerate(_images(seed=3)):
        bgr = rgb[:, :, ::-1].astype(np.float32)
        with torch.no_grad():
            inputs = torch.from_numpy(bgr.transpose(2, 0, 1).copy())[None] - theirs.mean_tensor
            their_raw = theirs(inputs)
            our_raw = ours(to_network_input(rgb))
        for name, a, b in zip(("loc", "conf", "landmarks"), their_raw, our_raw, strict=True):
            results[f"raw {name} max |diff|"] = max(results.get(f"raw {name} max |diff|", 0.0), float((a - b).abs().max()))
        confidence = float(torch.quantile(their_raw[1][0, :, 1], 0.995))
        their_faces = theirs.detect_faces(rgb[:, :, ::-1].copy(), conf_threshold=confidence)
        our_faces = detect_faces(ours, rgb, confidence=confidence)
        print(f"image {index} {rgb.shape[1]}x{rgb.shape[0]}: facexlib {len(their_faces)} faces, emaki {len(our_faces)} "
              f"(threshold {confidence:.4f})")
        assert len(their_faces) == len(our_faces), "different face counts"
        ours_rows = np.array([[*f.box, f.score, *f.landmarks.reshape(-1)] for f in our_faces]).reshape(-1, 15)
        diff = np.abs(their_faces - ours_rows).max(axis=0) if len(our_faces) else np.zeros(15)
        results["boxes max |diff| px"] = max(results.get("boxes max |diff| px", 0.0), float(diff[:4].max()))
        results["scores max |diff|"] = max(results.get("scores max |diff|", 0.0), float(diff[4]))
        results["landmarks max |diff| px"] = max(results.get("landmarks max |diff| px", 0.0), float(diff[5:].max()))


def _helper(image_bgr: np.ndarray):
    """facexlib's FaceRestoreHelper with its A1111 settings, built without loading its models."""
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    helper = FaceRestoreHelper.__new__(FaceRestoreHelper)
    helper.upscale_factor, helper.face_size, helper.pad_blur, helper.use_parse = 1, (512, 512), False, False
    helper.template_3points, helper.save_ext = False, "png"
    helper.face_template = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                                     [201.26117, 371.41043], [313.08905, 371.15118]])
    helper.clean_all()
    helper.input_img = image_bgr
    return helper


def _crop_shift(first: np.ndarray, second: np.ndarray) -> float:
    """How far apart two 2×3 maps put the picture's points that land in the 512×512 crop, in crop pixels."""
    from emaki.faces.alignment import invert_affine

    corners = np.array([[0, 0, 1], [511, 0, 1], [0, 511, 1], [511, 511, 1]], dtype=np.float64)
    source = corners @ np.vstack([invert_affine(first), [0, 0, 1]]).T
    return float(np.abs(source @ second.T - corners[:, :2]).max())


def compare_alignment(results: dict[str, float]) -> None:
    from emaki.faces.alignment import (
        CROP_BORDER_RGB,
        FACE_SIZE,
        FFHQ_TEMPLATE,
        align_face,
        similarity_transform,
        warp_affine,
    )
    from emaki.faces.paste import paste_faces

    rng = np.random.default_rng(5)
    image = (np.kron(rng.integers(0, 256, (45, 60, 3)), np.ones((8, 8, 1)))).astype(np.uint8)  # 480×360
    for trial in range(9):  # three trials per landmark noise level
        noise = (0.0, 0.5, 1.5)[trial % 3]
        scale, angle = rng.uniform(0.12, 0.6), rng.uniform(-0.6, 0.6)
        rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = rng.uniform([60, 60], [420, 300])
        landmarks = (FFHQ_TEMPLATE - 256) @ rotation.T + centre + rng.normal(0, noise, (5, 2))
        helper = _helper(image[:, :, ::-1].copy())
        helper.all_landmarks_5 = [landmarks]
        helper.align_warp_face()
        their_matrix, their_crop = helper.affine_matrices[0], helper.cropped_faces[0][:, :, ::-1]
        our_matrix = similarity_transform(landmarks, FFHQ_TEMPLATE)
        key = f"least squares vs facexlib's LMEDS fit, landmark noise {noise:.1f} px: max crop-pixel shift"
        results[key] = max(results.get(key, 0.0), _crop_shift(their_matrix, our_matrix))
        # The crops and pastes are compared through the same matrix (facexlib's), so that only the warps differ.
        picture = torch.from_numpy(image.transpose(2, 0, 1).copy()).double()
        our_crop = warp_affine(picture, their_matrix, (FACE_SIZE, FACE_SIZE), CROP_BORDER_RGB).round().clamp(0, 255)
        crop_diff = np.abs(our_crop.numpy().transpose(1, 2, 0) - their_crop.astype(np.float64))
        results["crop max |diff| (0-255)"] = max(results.get("crop max |diff| (0-255)", 0.0), float(crop_diff.max()))
        results["crop mean |diff| (0-255)"] = max(results.get("crop mean |diff| (0-255)", 0.0), float(crop_diff.mean()))
        restored = 255 - their_crop  # a "restorer" that inverts the colours
        helper.add_restored_face(restored[:, :, ::-1].copy())
        helper.get_inverse_affine(None)
        their_paste = helper.paste_faces_to_input_image()[:, :, ::-1].astype(np.float64)
        restored_t = torch.from_numpy(restored.transpose(2, 0, 1).copy()).float()
        our_paste = paste_faces(picture.float(), [(restored_t, their_matrix)]).numpy().transpose(1, 2, 0)
        paste_diff = np.abs(our_paste - their_paste)
        results["paste max |diff| (0-255)"] = max(results.get("paste max |diff| (0-255)", 0.0), float(paste_diff.max()))
        results["paste mean |diff| (0-255)"] = max(results.get("paste mean |diff| (0-255)", 0.0), float(paste_diff.mean()))
        results["paste pixels differing by > 2"] = max(results.get("paste pixels differing by > 2", 0.0),
                                                       float((paste_diff > 2).mean()))
        _, our_full = align_face(picture, landmarks)
        assert np.allclose(our_full, our_matrix)


def main() -> None:
    _import_torchvision()
    torch.set_grad_enabled(False)
    results: dict[str, float] = {}
    compare_detection(results)
    compare_alignment(results)
    for name, value in results.items():
        print(f"{name}: {value:.3g}")


if __name__ == "__main__":
    main()

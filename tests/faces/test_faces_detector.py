"""emaki's RetinaFace: facexlib's layout (checked against its key names and shapes, saved from
facexlib itself), prior boxes that line up with the network's outputs, decoding, NMS, and
reading a detector file. The outputs equal facexlib's (benchmarks/faces_vs_facexlib.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emaki.errors import ModelLoadError
from emaki.faces import RetinaFace, detect_faces, load_detector
from emaki.faces.detection import (
    decode_boxes,
    decode_landmarks,
    non_maximum_suppression,
    prior_boxes,
)

FACEXLIB_KEYS = Path(__file__).with_name("retinaface_keys.json")


@pytest.fixture(scope="module")
def meta_model() -> RetinaFace:
    with torch.device("meta"):
        return RetinaFace()


def test_the_detector_has_facexlibs_tensor_names_and_shapes_in_order(meta_model):
    ours = [(name, list(value.shape)) for name, value in meta_model.state_dict().items()]
    theirs = list(json.loads(FACEXLIB_KEYS.read_text()).items())
    assert len(theirs) == 456 and ours == [(name, shape) for name, shape in theirs]


@pytest.mark.parametrize("size", [(37, 131)])  # odd sizes: ceil at every stride
def test_prior_boxes_line_up_with_the_network_outputs(size, meta_model):
    height, width = size
    boxes, classes, landmarks = meta_model(torch.empty(1, 3, height, width, device="meta"))
    priors = prior_boxes(height, width)
    assert boxes.shape[1] == classes.shape[1] == landmarks.shape[1] == len(priors)
    # the first prior: the first stride-8 cell's centre, 16 pixels wide; the second on the same cell, 32
    assert priors[0].tolist() == pytest.approx([4 / width, 4 / height, 16 / width, 16 / height])
    assert priors[1].tolist() == pytest.approx([4 / width, 4 / height, 32 / width, 32 / height])
    assert priors[2, 0] == pytest.approx(12 / width)  # the next cell along the row


def test_decoding_zero_offsets_gives_the_priors_and_offsets_move_them():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    assert decode_boxes(torch.zeros(1, 4), priors).tolist()[0] == pytest.approx([0.4, 0.3, 0.6, 0.7])
    moved = decode_boxes(torch.tensor([[1.0, 0.0, 0.0, 5.0]]), priors).tolist()[0]
    assert moved[0] + moved[2] == pytest.approx(2 * (0.5 + 0.1 * 0.2))  # centre x + 0.1·w
    assert moved[3] - moved[1] == pytest.approx(0.4 * float(np.exp(1.0)))  # height · exp(5·0.2)
    points = decode_landmarks(torch.zeros(1, 10), priors).reshape(5, 2)
    assert (points == torch.tensor([0.5, 0.5])).all()


def test_nms_keeps_the_best_of_overlapping_boxes_and_separate_ones():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5.0]])
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    # IoU(0, 1) = 90/110 > 0.4; IoU(1, 3) = 45/105 > 0.4 as well; box 2 overlaps nothing
    assert non_maximum_suppression(boxes, scores, 0.4) == [1, 2]
    assert non_maximum_suppression(boxes, scores, 0.95) == [1, 0, 2, 3]


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random detector in the released file's form: a DataParallel `module.` prefix, pickled."""
    torch.manual_seed(0)
    model = RetinaFace()
    for head in (*model.ClassHead, *model.BboxHead, *model.LandmarkHead):
        torch.nn.init.zeros_(head.conv1x1.weight)
        torch.nn.init.zeros_(head.conv1x1.bias)
    path = tmp_path_factory.mktemp("detector") / "detection_Resnet50_Final.pth"
    torch.save({f"module.{name}": value for name, value in model.state_dict().items()}, path)
    return path


def test_a_facexlib_detector_file_loads_and_detects(detector_file: Path):
    model = load_detector(detector_file)
    expected = torch.load(detector_file, weights_only=True)
    assert torch.equal(model.body.layer3[2].conv2.weight, expected["module.body.layer3.2.conv2.weight"])
    # heads with zero weights: every prior scores softmax(bias) and decodes to itself
    with torch.no_grad():
        model.ClassHead[0].conv1x1.bias.copy_(torch.tensor([0.0, 5.0, 0.0, -5.0]))
    faces = detect_faces(model, np.zeros((64, 64, 3), np.uint8), confidence=0.9)
    assert faces and all(face.score == pytest.approx(float(torch.tensor([0.0, 5.0]).softmax(0)[1])) for face in faces)
    first = faces[0]
    assert first.box == pytest.approx((-4.0, -4.0, 12.0, 12.0))  # the first 16-pixel prior at (4, 4)
    assert first.landmarks.shape == (5, 2) and np.allclose(first.landmarks, 4.0)
    boxes = torch.tensor([face.box for face in faces])
    assert non_maximum_suppression(boxes, torch.ones(len(faces)), 0.4) == list(range(len(faces)))  # none overlap


def test_a_file_that_is_not_the_detector_is_named(tmp_path: Path):
    path = tmp_path / "detection_Resnet50_Final.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match=r"detection_Resnet50_Final\.pth: not facexlib's RetinaFace"):
        load_detector(path)

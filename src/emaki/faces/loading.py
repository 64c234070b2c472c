"""Reading the face detector's weights (facexlib's `detection_Resnet50_Final.pth`, or the same
tensors as safetensors) through emaki's safe readers, with errors naming the file."""

from __future__ import annotations

from pathlib import Path

import torch

from emaki.errors import ModelLoadError
from emaki.faces.retinaface import RetinaFace
from emaki.upscalers.loading import read_state_dict

DETECTOR_FILE = "detection_Resnet50_Final.pth"


def load_detector(path: str | Path) -> RetinaFace:
    """RetinaFace-ResNet50 with the weights in `path`, on the CPU in float32, in eval mode.
    The original file was saved from a DataParallel model: a `module.` prefix is dropped."""
    path = Path(path)
    tensors = {name.removeprefix("module."): value for name, value in read_state_dict(path).items()}
    model = RetinaFace()
    expected = model.state_dict()
    missing = [name for name in expected if name not in tensors and not name.endswith("num_batches_tracked")]
    unexpected = [name for name in tensors if name not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which RetinaFace-ResNet50 does not"
        raise ModelLoadError(f"{path}: not facexlib's RetinaFace-ResNet50 face detector ({DETECTOR_FILE}): it "
                             f"{what} ({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) or value.shape != expected[name].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelLoadError(f"{path}: {name} is {shape}, RetinaFace-ResNet50 has {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)  # old files lack BatchNorm's num_batches_tracked; unused here
    return model.eval()

"""The bundled demo model: procedural chibi faces, their evaluator, and the shipped checkpoint.

`faces` draws the training data (danbooru-style captions), `describe` reads attributes back
from an image, `demo_model_path()` is the trained model shipped inside the package (trained by
`scripts/train_demo.py`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from emaki.demo.describe import describe
from emaki.demo.faces import FaceAttributes, caption, draw_face, random_attributes, sample_face

DEMO_MODEL_FILE = "emaki-demo.safetensors"


def demo_model_path() -> Path:
    """The shipped demo checkpoint (single-file LDM layout, fp16, config in its metadata)."""
    return Path(str(resources.files("emaki") / "data" / "demo" / DEMO_MODEL_FILE))


__all__ = [
    "DEMO_MODEL_FILE",
    "FaceAttributes",
    "caption",
    "demo_model_path",
    "describe",
    "draw_face",
    "random_attributes",
    "sample_face",
]

"""The bundled demo model: procedural chibi faces, their evaluator, and the shipped checkpoint.

`faces` draws the training data (danbooru-style captions), `describe` reads attributes back
from an image, `demo_model_path()` is the trained model shipped inside the package (trained by
`scripts/train_demo.py`).
"""

from __future__ import annotations

from emaki.demo.describe import describe
from emaki.demo.faces import FaceAttributes, caption, draw_face, random_attributes, sample_face
from emaki.models.resolve import DEMO_MODEL_FILE, demo_model_path

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

"""Read a demo face's attributes back from an image (the evaluator of the demo model).

The faces share one layout (`emaki.demo.faces`), so each attribute is read from fixed regions:
the median colour of a region is matched to the nearest palette colour, and shapes (mouth,
hair length, accessories) are told apart by comparing regions with the hair, skin and
background colours found in the same image. Images of another size are box-resized to 64x64.

>>> from emaki.demo.faces import FaceAttributes, draw_face
>>> a = FaceAttributes("pink", "twintails", "green", "smile", "blue", "glasses")
>>> d = describe(draw_face(a))
>>> (d["hair_color"], d["eye_color"], d["hair_length"], d["expression"], d["accessory"])
('pink', 'green', 'twintails', 'smile', 'glasses')
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from emaki.demo.faces import (
    BACKGROUNDS,
    EYE_CENTERS,
    EYE_COLORS,
    HAIR_COLORS,
    HAT,
    MOUTH,
    RIBBON,
    SIZE,
    SKIN,
    _sepia,
)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, end exclusive)

_BG: tuple[Box, ...] = ((0, 0, 4, 4), (60, 0, 64, 4))
_HAIR: tuple[Box, ...] = ((24, 19, 40, 22), (15, 26, 18, 34), (46, 26, 49, 34))
_IRIS: tuple[Box, ...] = tuple(
    (int(cx) - 1, int(cy) + 2, int(cx) + 1, int(cy) + 4) for cx, cy in EYE_CENTERS
)
_EYE_UPPER: tuple[Box, ...] = tuple(
    (int(cx), int(cy) - 3, int(cx) + 2, int(cy) - 1) for cx, cy in EYE_CENTERS
)
_CHEEK: Box = (22, 44, 26, 47)
_LONG: Box = (22, 55, 42, 59)
_TWIN: tuple[Box, ...] = ((3, 38, 10, 50), (54, 38, 61, 50))
_HAT: Box = (22, 1, 42, 5)
_RIBBON: tuple[Box, ...] = ((44, 9, 46, 13), (54, 9, 56, 13))
_GLASSES: Box = (31, 38, 34, 42)
_EAR: Box = (14, 4, 20, 8)
_MOUTH_OPEN: Box = (31, 45, 34, 48)
_MOUTH_LOW: Box = (30, 48, 35, 50)  # a smile's lowest point
_MOUTH_HIGH: Box = (30, 46, 35, 48)  # a frown's highest point


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        if img.size != (SIZE, SIZE):
            img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
        return np.asarray(img, dtype=np.float32)
    arr = np.asarray(image, dtype=np.float32)
    if arr.shape[0] == 3 and arr.shape[-1] != 3:  # CHW
        arr = arr.transpose(1, 2, 0)
    return _as_array(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def _median(arr: np.ndarray, *boxes: Box) -> np.ndarray:
    pixels = np.concatenate([arr[y0:y1, x0:x1].reshape(-1, 3) for x0, y0, x1, y1 in boxes])
    return np.median(pixels, axis=0)


def _dist(a: np.ndarray, b: Any) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)))


def _nearest(color: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    name = min(palette, key=lambda k: _dist(color, palette[k]))
    return name, _dist(color, palette[name])


def hair_rgb(image: Any) -> tuple[float, float, float]:
    """The median colour of the hair region: a continuous reading where `hair_color` rounds to
    the nearest palette colour (used to see partial shifts, e.g. from emphasis)."""
    r, g, b = (float(c) for c in _median(_as_array(image), *_HAIR))
    return r, g, b


def describe(image: Any) -> dict[str, Any]:
    """The attributes a demo face shows, as `FaceAttributes` fields plus `*_distance` scores.

    `image`: a PIL image or an HxWx3 / 3xHxW array of 0-255 values. `eye_color` is None when
    the eyes are closed. The distances (RGB, 0-441) say how far the read colour was from the
    palette colour chosen: large values mean the region did not look like the demo layout.
    """
    arr = _as_array(image)
    cheek = _median(arr, _CHEEK)
    sepia = _dist(cheek, _sepia(SKIN)) < _dist(cheek, SKIN)
    pal = _sepia if sepia else (lambda c: c)

    def palette(p: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        return {k: pal(v) for k, v in p.items()}

    skin = np.asarray(pal(SKIN), dtype=np.float32)
    bg = _median(arr, *_BG)
    background, bg_d = _nearest(bg, palette(BACKGROUNDS))
    hair = _median(arr, *_HAIR)
    hair_color, hair_d = _nearest(hair, palette(HAIR_COLORS))

    def looks_like_hair(box: Box, *more: Box) -> bool:
        c = _median(arr, box, *more)
        return _dist(c, hair) < _dist(c, bg)

    if looks_like_hair(_LONG):
        hair_length = "long hair"
    elif looks_like_hair(*_TWIN):
        hair_length = "twintails"
    else:
        hair_length = "short hair"

    iris = _median(arr, *_IRIS)
    eye_color: str | None
    eye_color, eye_d = _nearest(iris, palette(EYE_COLORS))
    if _dist(_median(arr, *_EYE_UPPER), skin) < 50:
        eye_color, expression = None, "closed eyes"
    else:
        open_mouth = _median(arr, _MOUTH_OPEN)
        low = _median(arr, _MOUTH_LOW)
        high = _median(arr, _MOUTH_HIGH)
        if _dist(open_mouth, pal(MOUTH)) < _dist(open_mouth, skin):
            expression = "open mouth"
        elif _dist(low, skin) > _dist(high, skin):
            expression = "smile"
        else:
            expression = "frown"

    hat = _median(arr, _HAT)
    ribbon = _median(arr, *_RIBBON)
    glasses = _median(arr, _GLASSES)
    accessory: str | None = None
    if _dist(hat, pal(HAT)) < _dist(hat, bg):
        accessory = "hat"
    elif _dist(ribbon, pal(RIBBON)) < min(_dist(ribbon, bg), _dist(ribbon, hair)):
        accessory = "hair ribbon"
    elif _dist(glasses, skin) > 60:
        accessory = "glasses"

    ear = _median(arr, _EAR)
    cat_ears = accessory != "hat" and _dist(ear, bg) > min(40.0, _dist(ear, hair) + 20)

    return {
        "hair_color": hair_color,
        "hair_length": hair_length,
        "eye_color": eye_color,
        "expression": expression,
        "background": background,
        "accessory": accessory,
        "cat_ears": bool(cat_ears),
        "style": "sepia" if sepia else "default",
        "hair_distance": hair_d,
        "eye_distance": None if eye_color is None else eye_d,
        "background_distance": bg_d,
    }

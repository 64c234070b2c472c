"""Procedural chibi anime faces with danbooru-style captions: the demo model's training data.

Every face uses one fixed layout on a 64x64 canvas (drawn 4x larger, then box-downsampled), so
`emaki.demo.describe` can read the attributes back from fixed regions. Two things exist only on
request and never in training data (`random_attributes(..., held_out=False)`): **cat ears**
(a new concept for textual-inversion tests) and the **sepia** style (thick dark outlines, sepia
palette; for hypernetwork tests).

>>> attrs = random_attributes(random.Random(0))
>>> caption(attrs, random.Random(0)).startswith("1girl, solo, ")
True
>>> draw_face(attrs).size
(64, 64)
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

from PIL import Image, ImageDraw

SIZE = 64
_SCALE = 4  # drawn at 256x256, then box-downsampled: anti-aliased edges

RGB = tuple[int, int, int]

HAIR_COLORS: dict[str, RGB] = {
    "black": (35, 35, 45),
    "brown": (125, 75, 40),
    "blonde": (250, 215, 95),
    "red": (215, 35, 40),
    "blue": (45, 85, 225),
    "green": (45, 165, 65),
    "pink": (250, 135, 190),
    "purple": (135, 60, 185),
}
EYE_COLORS: dict[str, RGB] = {
    "blue": (40, 110, 235),
    "red": (220, 30, 35),
    "green": (35, 170, 60),
    "yellow": (240, 200, 20),
    "purple": (150, 55, 200),
    "brown": (120, 70, 30),
}
BACKGROUNDS: dict[str, RGB] = {
    "white": (255, 255, 255),
    "grey": (170, 170, 170),
    "blue": (165, 205, 250),
    "pink": (250, 205, 220),
    "yellow": (250, 240, 155),
}
HAIR_LENGTHS = ("short hair", "long hair", "twintails")
EXPRESSIONS = ("smile", "open mouth", "closed eyes", "frown")
ACCESSORIES = (None, "hat", "hair ribbon", "glasses")
STYLES = ("default", "sepia")

SKIN: RGB = (255, 228, 210)
OUTLINE: RGB = (50, 30, 30)
HAT: RGB = (70, 80, 100)
RIBBON: RGB = (245, 140, 30)
MOUTH: RGB = (150, 40, 55)
EAR_INNER: RGB = (250, 170, 180)

# Layout, in 64x64 canvas coordinates (shared with describe.py).
EYE_CENTERS = ((25.0, 36.0), (39.0, 36.0))
MOUTH_CENTER = (32.0, 47.0)


@dataclass(frozen=True)
class FaceAttributes:
    """What one drawn face shows; each field maps to one danbooru tag (or none)."""

    hair_color: str
    hair_length: str
    eye_color: str
    expression: str
    background: str
    accessory: str | None = None
    cat_ears: bool = False
    style: str = "default"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def random_attributes(rng: random.Random, *, held_out: bool = False) -> FaceAttributes:
    """Uniformly random attributes; with `held_out`, also cat ears and the sepia style (50% each).

    Training data never uses `held_out=True`.
    """
    attrs = FaceAttributes(
        hair_color=rng.choice(list(HAIR_COLORS)),
        hair_length=rng.choice(HAIR_LENGTHS),
        eye_color=rng.choice(list(EYE_COLORS)),
        expression=rng.choice(EXPRESSIONS),
        background=rng.choice(list(BACKGROUNDS)),
        accessory=rng.choice(ACCESSORIES),
    )
    if held_out:
        attrs = replace(attrs, cat_ears=rng.random() < 0.5, style=rng.choice(STYLES))
        if attrs.cat_ears and attrs.accessory == "hat":
            attrs = replace(attrs, accessory=None)
    return attrs


def tags(attrs: FaceAttributes) -> list[str]:
    """The attribute tags of a face (without `1girl, solo`), in a fixed order."""
    out = [
        attrs.hair_length,
        f"{attrs.hair_color} hair",
        f"{attrs.eye_color} eyes",
        attrs.expression,
        f"{attrs.background} background",
    ]
    if attrs.accessory:
        out.append(attrs.accessory)
    if attrs.cat_ears:
        out.append("cat ears")
    if attrs.style == "sepia":
        out += ["sepia", "thick outlines"]
    return out


def caption(
    attrs: FaceAttributes, rng: random.Random | None = None, *, keep: float = 1.0
) -> str:
    """`1girl, solo, ` + the tags in random order (if `rng`), each kept with probability `keep`."""
    body = tags(attrs)
    if rng is not None:
        rng.shuffle(body)
        body = [t for t in body if keep >= 1.0 or rng.random() < keep]
    return ", ".join(["1girl", "solo", *body])


def _sepia(color: RGB) -> RGB:
    """The classic sepia matrix, slightly darkened so outlines stay distinct."""
    r, g, b = color
    grey = 0.299 * r + 0.587 * g + 0.114 * b
    return (min(255, int(grey * 1.0 + 20)), min(255, int(grey * 0.85 + 8)), int(grey * 0.62))


def draw_face(attrs: FaceAttributes, size: int = SIZE) -> Image.Image:
    """Draw `attrs` as a `size`x`size` RGB image (layout fixed, see module constants)."""
    sepia = attrs.style == "sepia"
    pal = _sepia if sepia else (lambda c: c)
    line_w = 10 if sepia else 4  # in 256-px units: 2.5 px vs 1 px at 64
    outline = (25, 15, 5) if sepia else OUTLINE
    k = _SCALE * size / SIZE

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * k, y0 * k, x1 * k, y1 * k]

    def pts(*xy: tuple[float, float]) -> list[tuple[float, float]]:
        return [(x * k, y * k) for x, y in xy]

    def as_drawn(x: float) -> float:
        return x

    def mirrored(x: float) -> float:  # the same feature on the other side of the face
        return SIZE - x

    canvas = Image.new("RGB", (round(SIZE * k), round(SIZE * k)), pal(BACKGROUNDS[attrs.background]))
    d = ImageDraw.Draw(canvas)
    w = max(1, round(line_w * k / _SCALE))
    hair = pal(HAIR_COLORS[attrs.hair_color])

    # Behind the head: long hair or twintails.
    if attrs.hair_length == "long hair":
        d.rounded_rectangle(box(11, 16, 53, 61), radius=12 * k, fill=hair, outline=outline, width=w)
    elif attrs.hair_length == "twintails":
        for x0 in (1, 50):
            d.ellipse(box(x0, 22, x0 + 13, 61), fill=hair, outline=outline, width=w)
            d.ellipse(box(x0 + 4, 18, x0 + 9, 25), fill=hair, outline=outline, width=w)
    # Cat ears stick out of the head.
    if attrs.cat_ears:
        for mx in (as_drawn, mirrored):
            d.polygon(pts((mx(11), 17), (mx(15), 0), (mx(28), 9)), fill=hair, outline=outline, width=w)
            d.polygon(pts((mx(15), 13), (mx(16.5), 5), (mx(23), 10)), fill=pal(EAR_INNER))
    # Back of the head, face, bangs, side locks.
    d.ellipse(box(12, 6, 52, 46), fill=hair, outline=outline, width=w)
    d.ellipse(box(16, 20, 48, 53), fill=pal(SKIN), outline=outline, width=w)
    bangs = [(15, 16), (49, 16), (49, 24)]
    for i, x in enumerate(range(46, 16, -5)):
        bangs.append((x - 2.5, 28 if i % 2 == 0 else 26))
        bangs.append((x - 5, 23))
    bangs.append((15, 24))
    d.polygon(pts(*bangs), fill=hair, outline=outline, width=w)
    lock_end = 50 if attrs.hair_length == "long hair" else 42
    for mx in (as_drawn, mirrored):
        d.polygon(pts((mx(13), 18), (mx(21), 22), (mx(19), lock_end - 6), (mx(16), lock_end)),
                  fill=hair, outline=outline, width=w)

    # Eyes.
    for cx, cy in EYE_CENTERS:
        if attrs.expression == "closed eyes":
            d.arc(box(cx - 4, cy - 4, cx + 4, cy + 3), start=20, end=160, fill=outline, width=w)
            continue
        iris = pal(EYE_COLORS[attrs.eye_color])
        pupil = tuple(int(c * 0.45) for c in iris)
        d.ellipse(box(cx - 4, cy - 5, cx + 4, cy + 6), fill=pal((255, 255, 255)), outline=outline, width=w)
        d.ellipse(box(cx - 3, cy - 4, cx + 3, cy + 5.5), fill=iris)
        d.ellipse(box(cx - 1.5, cy - 2, cx + 1.5, cy + 1.5), fill=pupil)
        d.ellipse(box(cx - 2.5, cy - 3.5, cx - 0.5, cy - 1.5), fill=pal((255, 255, 255)))
        d.line(pts((cx - 5, cy - 5), (cx + 5, cy - 5)), fill=outline, width=2 * w)

    # Mouth.
    mx0, my0 = MOUTH_CENTER
    if attrs.expression == "open mouth":
        d.ellipse(box(mx0 - 3, my0 - 2.5, mx0 + 3, my0 + 3), fill=pal(MOUTH), outline=outline, width=w)
    elif attrs.expression == "frown":
        d.arc(box(mx0 - 4, my0, mx0 + 4, my0 + 6), start=200, end=340, fill=outline, width=w)
    else:  # smile, closed eyes
        d.arc(box(mx0 - 4, my0 - 5, mx0 + 4, my0 + 2), start=20, end=160, fill=outline, width=w)

    # Accessories, on top.
    if attrs.accessory == "glasses":
        for cx, cy in EYE_CENTERS:
            d.rectangle(box(cx - 6, cy - 6, cx + 6, cy + 7), outline=pal((20, 20, 20)), width=w)
        d.line(pts((31, 35), (33, 35)), fill=pal((20, 20, 20)), width=w)
    elif attrs.accessory == "hat":
        d.rounded_rectangle(box(19, 0, 45, 14), radius=3 * k, fill=pal(HAT), outline=outline, width=w)
        d.ellipse(box(9, 10, 55, 18), fill=pal(HAT), outline=outline, width=w)
    elif attrs.accessory == "hair ribbon":
        d.polygon(pts((50, 11), (43, 5), (44, 17)), fill=pal(RIBBON), outline=outline, width=w)
        d.polygon(pts((50, 11), (57, 5), (56, 17)), fill=pal(RIBBON), outline=outline, width=w)
        d.ellipse(box(48, 9, 52, 13), fill=pal(RIBBON), outline=outline, width=w)

    return canvas.resize((size, size), Image.Resampling.BOX)


def sample_face(seed: int, *, held_out: bool = False) -> tuple[Image.Image, str, FaceAttributes]:
    """One face, its caption (random tag order) and attributes, all determined by `seed`."""
    rng = random.Random(seed)
    attrs = random_attributes(rng, held_out=held_out)
    return draw_face(attrs), caption(attrs, rng), attrs


def all_attributes() -> list[FaceAttributes]:
    """Every training-distribution face (no cat ears, default style), in a fixed order."""
    return [
        FaceAttributes(h, length, e, x, b, a)
        for h in HAIR_COLORS
        for length in HAIR_LENGTHS
        for e in EYE_COLORS
        for x in EXPRESSIONS
        for b in BACKGROUNDS
        for a in ACCESSORIES
    ]

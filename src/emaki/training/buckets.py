"""Aspect-ratio buckets, as kohya's sd-scripts make them (`--enable_bucket`, `--min_bucket_reso`,
`--max_bucket_reso`, `--bucket_reso_steps`): images of any shape are trained near their own
aspect ratio instead of squashed to one size, and every batch comes from one bucket.

The buckets for a training size W×H: the square of side ⌊√(W·H)/step⌋·step, and for each width
w = min, min+step, ..., max the height h = min(max, ⌊W·H/w/step⌋·step) when h ≥ min, with its
transpose — every bucket's area at most W·H, every side a multiple of `step` within [min, max].
An image goes to the bucket whose aspect ratio w/h is nearest its own, is scaled (keeping its
aspect ratio) until it covers the bucket, and is cropped to it about its centre.

>>> sorted(bucket_resolutions((64, 64), 32, 128, 32))
[(32, 96), (32, 128), (64, 64), (96, 32), (128, 32)]
>>> nearest_bucket((300, 200), [(64, 64), (96, 32), (32, 96)])
(64, 64)
>>> nearest_bucket((1000, 200), [(64, 64), (96, 32), (32, 96)])
(96, 32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from emaki.errors import ParamsError

#: kohya's defaults: --min_bucket_reso 256 --max_bucket_reso 1024 --bucket_reso_steps 64
DEFAULT_BUCKETS = (256, 1024, 64)
MAX_BUCKET_SIDE = 4096


def check_buckets(values: Sequence[int], field: str = "buckets") -> tuple[int, int, int]:
    """(min, max, step): sides from `min` to `max` pixels in steps of `step`, all multiples of 8."""
    if len(values) != 3:
        raise ParamsError(f"{field}: expected three numbers MIN,MAX,STEP (e.g. 256,1024,64), got {list(values)}")
    low, high, step = (int(v) for v in values)
    if any(v != int(v) for v in values) or step < 8 or step % 8 or low % 8 or high % 8:
        raise ParamsError(f"{field}: MIN, MAX and STEP must be whole multiples of 8 (the VAE's factor), "
                          f"got {list(values)}")
    if not step <= low <= high <= MAX_BUCKET_SIDE:
        raise ParamsError(f"{field}: expected STEP ≤ MIN ≤ MAX ≤ {MAX_BUCKET_SIDE}, got {list(values)}")
    return low, high, step


def bucket_resolutions(size: tuple[int, int], low: int, high: int, step: int) -> set[tuple[int, int]]:
    """The buckets (W, H) for training size `size` (see the module docstring)."""
    area = size[0] * size[1]
    side = max(step, int(math.sqrt(area) // step) * step)
    found = {(side, side)}
    for width in range(low, high + 1, step):
        height = min(high, int(area // width // step) * step)
        if height >= low:
            found |= {(width, height), (height, width)}
    return found


def nearest_bucket(image_size: tuple[int, int], buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's (W, H); ties go to the first."""
    ratio = image_size[0] / image_size[1]
    return min(buckets, key=lambda bucket: abs(bucket[0] / bucket[1] - ratio))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """`image` scaled to cover `bucket` (aspect ratio kept) and cropped to it about its centre."""
    width, height = image.size
    scale = max(bucket[0] / width, bucket[1] / height)
    scaled = (max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale)))
    resized = image.resize(scaled, Image.Resampling.BICUBIC) if scaled != image.size else image
    left, top = (scaled[0] - bucket[0]) // 2, (scaled[1] - bucket[1]) // 2
    return resized.crop((left, top, left + bucket[0], top + bucket[1]))


def parse_buckets(text: str, field: str = "--buckets") -> tuple[int, int, int]:
    """`MIN,MAX,STEP` as a user types it, checked.

    >>> parse_buckets("256, 1024, 64")
    (256, 1024, 64)
    """
    try:
        values = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise ParamsError(f"{field}: expected MIN,MAX,STEP in pixels (e.g. 256,1024,64), got {text!r}") from None
    return check_buckets(values, field)

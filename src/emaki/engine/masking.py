"""The inpainting mask as an image: reading it, blurring it, the area it covers, the colours that
fill it, and laying the original back over a result. Pure PIL/numpy; the semantics are A1111
v1.10's (`processing.py` for the mask, `masking.py` for the crop region and the fill).

Masks are greyscale ("L") images: 255 repaints a pixel, 0 keeps it.

>>> mask = Image.new("L", (100, 60))
>>> mask.paste(255, (40, 20, 50, 30))
>>> crop_region(mask, padding=4)
(36, 16, 54, 34)
>>> widen_to_aspect((36, 16, 54, 34), 64, 32, mask.size)
(27, 16, 63, 34)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from emaki.errors import ParamsError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, end exclusive)

# A1111's masked-content fill: the kept pixels blurred at falling radii and laid over each other
# (radius, times), so the wide, soft colours fill the hole and the sharper ones its edges.
FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def _open(path: str | Path, field: str) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise ParamsError(f"{field}: {path}: no such image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ParamsError(f"{field}: {path}: not a readable image ({e})") from None


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def read_mask(path: str | Path, *, rounded: bool) -> Image.Image:
    """A mask file as A1111 reads an uploaded one (`create_binary_mask`): an image with
    transparency is read from its alpha (opaque = repaint, as a painted stroke), thresholded at
    128 when `rounded`; any other image as greyscale (white = repaint)."""
    image = _open(path, "mask")
    if _has_alpha(image):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return threshold(alpha) if rounded else alpha
    return image.convert("L")


def alpha_mask(path: str | Path, *, rounded: bool) -> Image.Image | None:
    """The repaint mask an init image's transparency gives (transparent = repaint), or None when
    the image is opaque everywhere."""
    image = _open(path, "init_image")
    if not _has_alpha(image):
        return None
    alpha = image.convert("RGBA").getchannel("A")
    if alpha.getextrema() == (255, 255):
        return None
    mask = ImageOps.invert(alpha)
    return threshold(mask) if rounded else mask


def threshold(mask: Image.Image) -> Image.Image:
    """0 or 255: above 128 repaints."""
    return mask.point(lambda v: 255 if v > 128 else 0)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """OpenCV's Gaussian weights at A1111's kernel size, 2·int(2.5σ + 0.5) + 1 taps."""
    radius = int(2.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def _blur_axis(values: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """One 1-D Gaussian pass; the border is mirrored without repeating the edge pixel
    (OpenCV's default BORDER_REFLECT_101)."""
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    padding = [(0, 0), (0, 0)]
    padding[axis] = (radius, radius)
    padded = np.pad(values, padding, mode="reflect" if values.shape[axis] > 1 else "edge")
    length = values.shape[axis]
    out = np.zeros_like(values)
    for offset, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
    return out


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """A1111's mask blur: a horizontal Gaussian of σ = `blur_x`, then a vertical one of σ =
    `blur_y`, each rounded back to 8 bits (as `cv2.GaussianBlur` on the uint8 mask)."""
    values = np.asarray(mask.convert("L"), dtype=np.float64)
    for sigma, axis in ((blur_x, 1), (blur_y, 0)):
        if sigma > 0:
            values = np.clip(np.rint(_blur_axis(values, sigma, axis)), 0, 255)
    return Image.fromarray(values.astype(np.uint8), "L")


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """The box around every pixel to repaint, grown by `padding` within the image; None when
    there is none (A1111's `get_crop_region_v2`)."""
    box = mask.getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = box
    width, height = mask.size
    return max(x0 - padding, 0), max(y0 - padding, 0), min(x1 + padding, width), min(y1 + padding, height)


def _grow_span(start: int, end: int, length: float, limit: int) -> tuple[int, int]:
    """[start, end) grown to `length` about its middle, then moved back inside [0, limit)."""
    grow = int(length - (end - start))
    start, end = start - grow // 2, end + grow - grow // 2
    if end > limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, min(end - start, limit)
    return start, end


def widen_to_aspect(box: Box, width: int, height: int, size: tuple[int, int]) -> Box:
    """`box` grown along one side to the aspect of `width`×`height` (what it is redrawn at),
    staying inside an image of `size` (A1111's `expand_crop_region`)."""
    x0, y0, x1, y1 = box
    aspect = width / height
    if (x1 - x0) / (y1 - y0) > aspect:
        y0, y1 = _grow_span(y0, y1, (x1 - x0) / aspect, size[1])
    else:
        x0, x1 = _grow_span(x0, x1, (y1 - y0) * aspect, size[0])
    return x0, y0, x1, y1


def blur_fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The masked area filled with colours from around it ("Masked content: fill"): the kept
    pixels, premultiplied by how much they are kept so the repainted ones add no colour, blurred
    at each of `FILL_PASSES` and composited in that order."""
    kept = image.convert("RGBA")
    kept.putalpha(ImageOps.invert(mask.convert("L")))
    premultiplied = kept.convert("RGBa")
    filled = Image.new("RGBA", image.size)
    for radius, times in FILL_PASSES:
        layer = premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            filled.alpha_composite(layer)
    return filled.convert("RGB")


def overlay_original(generated: Image.Image, original: Image.Image, opacity: Image.Image) -> Image.Image:
    """`original` laid over `generated` at `opacity` (L: 255 = the original pixel, exactly):
    A1111's overlay composite, which keeps what is not repainted untouched."""
    alpha = np.asarray(opacity.convert("L"), dtype=np.float32)[..., None] / 255.0
    mixed = (np.asarray(original.convert("RGB"), dtype=np.float32) * alpha
             + np.asarray(generated.convert("RGB"), dtype=np.float32) * (1.0 - alpha))
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), "RGB")


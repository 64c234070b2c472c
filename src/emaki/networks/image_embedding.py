"""Embeddings stored in images: the `sd-ti-embedding` text chunk and the pixel-hidden data
(specs §3.3), readable and writable the way A1111 reads them.

Pixel layout: `[low block | 1 px black | picture | 1 px black | high block]`. The payload is
`zlib(json(data))` with tensors as `{"TORCHTENSOR": nested lists}`; each byte's low and high
nibble go to the low nibbles of the two blocks (row-major over `(height, width, RGB)`, repeated
cyclically to fill them), XORed with `LCG(a=1664525, c=1013904223, m=2**32, seed=0) % 255 & 0x0F`.
High nibbles are decoration only: readers mask them off.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

TEXT_CHUNK_KEY = "sd-ti-embedding"
_TENSOR_KEY = "TORCHTENSOR"


def _to_json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {_TENSOR_KEY: value.detach().cpu().float().tolist()}
        raise TypeError(f"cannot store {type(value).__name__} in an embedding image")

    return json.dumps(data, default=default)


def _from_json(text: str | bytes) -> Any:
    def hook(obj: dict[str, Any]) -> Any:
        if _TENSOR_KEY in obj:
            return torch.tensor(obj[_TENSOR_KEY], dtype=torch.float64)
        return obj

    return json.loads(text, object_hook=hook)


def embedding_to_b64(data: dict[str, Any]) -> str:
    """The value of the `sd-ti-embedding` text chunk: base64 of the JSON."""
    return base64.b64encode(_to_json(data).encode()).decode("ascii")


def embedding_from_b64(text: str | bytes) -> Any:
    return _from_json(base64.b64decode(text))


def lcg_nibbles(count: int) -> np.ndarray:
    """`count` values of the LCG stream A1111 XORs the blocks with, already `& 0x0F`.

    >>> lcg_nibbles(4).tolist()
    [13, 2, 15, 12]
    """
    out = np.empty(count, dtype=np.uint8)
    seed = 0
    for i in range(count):
        seed = (1664525 * seed + 1013904223) & 0xFFFFFFFF
        out[i] = (seed % 255) & 0x0F
    return out


def _xor_stream(block: np.ndarray) -> np.ndarray:
    return block ^ lcg_nibbles(block.size).reshape(block.shape)


def hide_in_pixels(picture: Image.Image, data: dict[str, Any], decoration: np.ndarray | None = None) -> Image.Image:
    """`picture` with `data` hidden in two blocks left and right of it (A1111's layout)."""
    return hide_payload_in_pixels(picture, zlib.compress(_to_json(data).encode(), level=9), decoration)


def hide_payload_in_pixels(picture: Image.Image, compressed: bytes,
                           decoration: np.ndarray | None = None) -> Image.Image:
    """`picture` with the bytes `compressed` (zlib of the JSON) hidden beside it."""
    picture = picture.convert("RGB")
    height = picture.height
    payload = np.frombuffer(compressed, dtype=np.uint8)
    per_block = 3 * height
    size = -(-payload.size // per_block) * per_block
    shades = _decoration_shades(decoration)
    blocks = []
    for nibbles, pattern in ((payload & 0x0F, shades), (payload >> 4, shades[::-1])):
        block = np.resize(nibbles, size).reshape(height, -1, 3).astype(np.uint8)
        rows, cols = np.indices(block.shape[:2])
        high = pattern[(rows // 4 + cols) % pattern.size][..., None]  # diagonal stripes
        blocks.append((_xor_stream(block) | (high << 4)).astype(np.uint8))
    low, high = blocks
    width = low.shape[1] + 1 + picture.width + 1 + high.shape[1]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:, : low.shape[1]] = low
    canvas[:, low.shape[1] + 1 : low.shape[1] + 1 + picture.width] = np.asarray(picture)
    canvas[:, width - high.shape[1] :] = high
    return Image.fromarray(canvas, "RGB")


def _decoration_shades(values: np.ndarray | None) -> np.ndarray:
    """High nibbles 1..15 from the first vector's magnitudes (never 0, so every data pixel
    stays non-black and no reader crops it away)."""
    if values is None or values.size == 0:
        return np.array([8], dtype=np.uint8)
    magnitude = np.abs(values.astype(np.float64).ravel()[:1024])
    top = magnitude.max()
    scaled = magnitude / top if top > 0 else magnitude
    return (1 + np.round(scaled * 14)).astype(np.uint8)


def _crop_black(pixels: np.ndarray) -> np.ndarray:
    """Drop border rows/columns in which no pixel is non-zero in all three channels."""
    lit = np.all(pixels > 0, axis=2)
    cols, rows = np.flatnonzero(np.any(lit, axis=0)), np.flatnonzero(np.any(lit, axis=1))
    if cols.size == 0 or rows.size == 0:
        return pixels[:0, :0]
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


MAX_HIDDEN_BYTES = 32 * 1024 * 1024
"""The most the hidden zlib payload may inflate to (an SD 1.x embedding of 75 vectors is ~1.5 MB of
JSON); more is refused, not inflated (a few KB of pixels could otherwise inflate to gigabytes)."""


class HiddenDataTooLarge(ValueError):
    """The zlib payload hidden in the pixels inflates past `MAX_HIDDEN_BYTES`."""


def _inflate(compressed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(compressed, MAX_HIDDEN_BYTES)
    if inflater.unconsumed_tail:
        raise HiddenDataTooLarge(f"the data hidden in its pixels inflates to more than {MAX_HIDDEN_BYTES:,} bytes")
    return raw


def read_pixel_data(image: Image.Image) -> Any | None:
    """The data hidden in an image's pixels, or None when it has none (a plain preview);
    `HiddenDataTooLarge` for a payload that inflates past `MAX_HIDDEN_BYTES`."""
    pixels = _crop_black(np.asarray(image.convert("RGB"))) & 0x0F
    empty = np.flatnonzero(pixels.sum(axis=(0, 2)) == 0)
    if empty.size < 2:
        return None
    low = _xor_stream(pixels[:, : empty[0]].astype(np.uint8))
    high = _xor_stream(pixels[:, empty[-1] + 1 :].astype(np.uint8))
    if low.shape != high.shape or low.size == 0:
        return None
    try:
        raw = _inflate(((high << 4) | low).tobytes())
    except zlib.error:
        return None
    try:
        return _from_json(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def read_image_data(image: Image.Image) -> tuple[Any, str] | None:
    """`(data, how)` from an image: the text chunk first, else the pixels; None if neither."""
    text = getattr(image, "text", None)
    if text is None:
        text = {k: v for k, v in image.info.items() if isinstance(v, str | bytes)}
    if TEXT_CHUNK_KEY in text:
        try:
            return embedding_from_b64(text[TEXT_CHUNK_KEY]), "image text chunk"
        except (ValueError, UnicodeDecodeError):
            pass
    data = read_pixel_data(image)
    return (data, "image pixels") if data is not None else None


def embedding_card(name: str, vectors: torch.Tensor, size: int = 192) -> Image.Image:
    """A small picture for an embedding: a colour field from its vectors and its name."""
    flat = vectors.detach().float().cpu().ravel()
    colour: tuple[int, ...] = (128, 128, 160)
    if flat.numel():
        colour = tuple(int(64 + 160 * torch.sigmoid(flat[i % flat.numel()] * 20).item()) for i in range(3))
    picture = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((8, size - 40, size - 8, size - 12), fill=(250, 250, 250))
    draw.text((14, size - 34), name[:28], fill=(20, 20, 20))
    draw.text((14, 12), f"{vectors.shape[0]} x {vectors.shape[-1]}", fill=(250, 250, 250))
    return picture

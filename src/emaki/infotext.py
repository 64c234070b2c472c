"""A1111 "infotext": the `parameters` text written into every image, and reading it back.

Writing follows v1.10.1 `create_infotext` (specs/FORMATS.md §5.1), parsing follows
`parse_generation_parameters` (§5.2). NovelAI images are read as A1111 does.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from emaki.errors import EmakiError
from emaki.models.regular_files import open_regular_file

PARAMETERS_KEY = "parameters"
MAX_TEXT_CHUNK_BYTES = 4 * 1024 * 1024
"""A PNG text chunk longer than this (stored or inflated) is refused unread; parameters are a few KB."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")

_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NOVELAI_SAMPLERS = {
    "k_euler_ancestral": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "ddim": "DDIM",
    "plms": "PLMS",
}


def quote(value: Any) -> str:
    """A value as v1.10.1 writes it: JSON-quoted when it holds `,`, newline or `:` — and, unlike
    v1.10.1, when it starts with `"`: written bare, such a value would be read (by A1111 too) as a
    quoted string running on into the next fields.

    >>> quote("easynegative: c74b4e810b03, bad-hands-5: aa7651be154c")
    '"easynegative: c74b4e810b03, bad-hands-5: aa7651be154c"'
    >>> quote("Euler a")
    'Euler a'
    >>> print(quote('"'))
    "\\""
    """
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return str(json.loads(text))
    except json.JSONDecodeError:
        return text


def format_number(value: float) -> str:
    """7.0 → "7", 7.5 → "7.5" (how A1111 users see CFG and strengths)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def build_infotext(prompt: str, negative_prompt: str, fields: Mapping[str, Any]) -> str:
    """The infotext string: prompt, `Negative prompt:` line, then `k: v` pairs (None dropped).

    >>> build_infotext("1girl", "", {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.0, "Seed": 1})
    '1girl\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1'
    """
    pairs = []
    for key, value in fields.items():
        if value is None:
            continue
        shown = format_number(value) if isinstance(value, float) else value
        pairs.append(key if key == shown else f"{key}: {quote(shown)}")
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(pairs)}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Parse an infotext into A1111's dict of strings (`Prompt`, `Negative prompt`, fields…).

    >>> d = parse_infotext('a cat\\nNegative prompt: dog\\nSteps: 20, Size: 512x768, TI hashes: "a: 1, b: 2"')
    >>> d["Prompt"], d["Negative prompt"], d["Size-1"], d["Size-2"], d["TI hashes"], d["Clip skip"]
    ('a cat', 'dog', '512', '768', 'a: 1, b: 2', '1')
    """
    result: dict[str, str] = {}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    result["Prompt"] = "\n".join(prompt_lines)
    result["Negative prompt"] = "\n".join(negative_lines)
    for key, value in _RE_PARAM.findall(last):
        value = unquote(value.strip())
        size = _RE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    result.setdefault("Clip skip", "1")
    result.setdefault("RNG", "GPU")
    result.setdefault("Schedule type", "Automatic")
    return result


def _novelai_infotext(info: Mapping[str, Any]) -> str | None:
    if info.get("Software") != "NovelAI":
        return None
    try:
        comment = json.loads(str(info.get("Comment", "{}")))
    except json.JSONDecodeError:
        return None
    sampler = _NOVELAI_SAMPLERS.get(str(comment.get("sampler", "")).lower(), "Euler a")
    return (
        f"{info.get('Description', '')}\nNegative prompt: {comment.get('uc', '')}\n"
        f"Steps: {comment.get('steps')}, Sampler: {sampler}, CFG scale: {comment.get('scale')}, "
        f"Seed: {comment.get('seed')}, Size: {comment.get('width')}x{comment.get('height')}, "
        "Clip skip: 2, ENSD: 31337"
    )


def _exif_user_comment(image: Image.Image) -> str | None:
    raw = image.getexif().get_ifd(0x8769).get(0x9286)
    if not isinstance(raw, bytes | bytearray) or len(raw) < 8:
        return None
    head, body = bytes(raw[:8]), bytes(raw[8:])
    if head.startswith(b"UNICODE"):
        return body.decode("utf-16-be", errors="replace")
    return body.decode("utf-8", errors="replace").strip("\0")


def infotext_of(image: Image.Image) -> str | None:
    """The generation parameters stored in an open image (PNG text, NovelAI, EXIF UserComment)."""
    info = dict(image.info)
    text = info.get(PARAMETERS_KEY)
    if isinstance(text, str) and text:
        return text
    novelai = _novelai_infotext({str(k): v for k, v in info.items()})
    if novelai:
        return novelai
    comment = _exif_user_comment(image)
    if comment:
        return comment
    gif_comment = info.get("comment")
    if isinstance(gif_comment, bytes):
        return gif_comment.decode("utf-8", errors="replace")
    return None


def _compressed_text(kind: bytes, body: bytes) -> bytes | None:
    """The zlib stream of a zTXt / compressed iTXt chunk body (PNG spec §11.3.4), else None."""
    key_end = body.find(b"\x00")
    if key_end < 0:
        return None
    if kind == b"zTXt":
        return body[key_end + 2:]
    if body[key_end + 1:key_end + 2] != b"\x01":  # iTXt stored uncompressed
        return None
    language_end = body.find(b"\x00", key_end + 3)
    translated_end = body.find(b"\x00", language_end + 1) if language_end >= 0 else -1
    return body[translated_end + 1:] if translated_end >= 0 else None


def check_png_text_chunks(f: BinaryIO, path: str | os.PathLike[str], limit: int,
                          error: type[EmakiError] = EmakiError) -> tuple[int, int] | None:
    """For a PNG: refuse (with `error`) a text chunk over `limit` bytes, stored or inflated, before
    PIL reads it; return the declared (width, height). None for another format. Reads chunk
    headers only (and the bodies of compressed text chunks, which are at most `limit`); leaves
    `f` at its start."""
    f.seek(0)
    if f.read(8) != PNG_SIGNATURE:
        f.seek(0)
        return None
    size = None
    while len(head := f.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        if kind in _TEXT_CHUNKS and length > limit:
            raise error(f"{os.fspath(path)}: a {kind.decode()} chunk of {length:,} bytes, more than the "
                        f"{limit:,} a text chunk may have")
        if kind == b"IHDR" or kind in _TEXT_CHUNKS[1:]:
            body = f.read(length)
            if kind == b"IHDR" and len(body) >= 8:
                size = struct.unpack(">II", body[:8])
            stream = _compressed_text(kind, body) if kind != b"IHDR" else None
            if stream is not None and _inflates_past(stream, limit):
                raise error(f"{os.fspath(path)}: a {kind.decode()} chunk that inflates to more than the "
                            f"{limit:,} bytes a text chunk may have")
            f.seek(4, os.SEEK_CUR)
        else:
            f.seek(length + 4, os.SEEK_CUR)
    f.seek(0)
    return (int(size[0]), int(size[1])) if size else None


def _inflates_past(stream: bytes, limit: int) -> bool:
    try:
        return len(zlib.decompressobj().decompress(stream, limit + 1)) > limit
    except zlib.error:
        return False  # PIL names a broken stream itself


def read_infotext(image_path: str | Path) -> str | None:
    """The generation parameters stored in an image file (see `infotext_of`). Only a regular
    file is opened; its pixels are never decoded; a PNG text chunk over `MAX_TEXT_CHUNK_BYTES`
    is refused unread."""
    path = Path(image_path)
    if not os.path.lexists(path):
        raise EmakiError(f"{path}: no such image")
    with open_regular_file(path, EmakiError) as f:
        size = check_png_text_chunks(f, path, MAX_TEXT_CHUNK_BYTES)
        try:
            with Image.open(f) as image:
                return infotext_of(image)
        except Image.DecompressionBombError as e:
            shown = f"{size[0]}×{size[1]} pixels" if size else str(e)
            raise EmakiError(f"{path}: {shown}, too large to open (a decompression bomb?)") from None
        except Exception as e:  # noqa: BLE001  (PIL fails on damaged files in many ways)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EmakiError(f"{path}: not a readable image ({first})") from None

"""Textual-inversion embeddings: every file layout the community shares (specs §3.1-3.3).

`load_embedding` reads
* `.pt` / `.bin` pickles (restricted unpickling) holding A1111's `string_to_param` (a dict or
  a `torch.nn.ParameterDict`, exactly one term), or a plain `dict` with one tensor: a diffusers
  concept `{"<token>": [n, dim] or [dim]}` or kohya `{"emb_params": [n, dim]}`;
* `.safetensors` with one tensor (`emb_params`, a token) or SDXL `clip_l` + `clip_g`;
* `.png` / `.webp` / `.jxl` / `.avif` images carrying the `sd-ti-embedding` text chunk or
  the pixel-hidden data (then the name stored in the image wins over the file name).

`save_embedding` writes the A1111 `.pt` layout, a kohya-style `.safetensors`, or an image card
(`.png`: text chunk and pixels; `.webp`: lossless, pixels).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from emaki.errors import ModelLoadError
from emaki.files import atomic_write
from emaki.infotext import check_png_text_chunks
from emaki.models.hashes import sha256_file
from emaki.models.regular_files import open_regular_file
from emaki.models.safe_load import SAFETENSORS, load_pickle, load_tensors, sniff_format
from emaki.networks.image_embedding import (
    TEXT_CHUNK_KEY,
    HiddenDataTooLarge,
    embedding_card,
    embedding_to_b64,
    hide_in_pixels,
    read_image_data,
)

PICKLE_SUFFIXES = (".pt", ".bin")
PROVENANCE_KEY = "emaki_provenance"
IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif")
EMBEDDING_SUFFIXES = PICKLE_SUFFIXES + (".safetensors",) + IMAGE_SUFFIXES
MAX_EMBEDDING_PIXELS = 4096 * 4096
"""Larger embedding images are refused before decoding (A1111's cards are well under a megapixel;
PIL itself only warns below 89 megapixels, i.e. ~270 MB decoded)."""
MAX_EMBEDDING_TEXT_BYTES = 16 * 1024 * 1024
"""The most an `sd-ti-embedding` text chunk may hold (75 SD 1.x vectors are ~2 MB of base64)."""


class NotAnEmbedding(ModelLoadError):
    """An image without embedding data: a preview picture, not an embedding."""


@dataclass
class Embedding:
    """One textual-inversion embedding: `vectors` is float32 `[n_vectors, width]`."""

    name: str
    vectors: torch.Tensor
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    path: Path | None = None
    sha256: str | None = None
    layout: str = ""  # how the file stored it: "a1111", "diffusers", "kohya", "sdxl", "image text chunk", ...
    provenance: dict[str, Any] | None = None  # how emaki trained it (`emaki_provenance`), if it did

    @property
    def shorthash(self) -> str | None:
        """A1111's TI shorthash: sha256 of the file, first 12 hex (specs §3.1)."""
        return self.sha256[:12] if self.sha256 else None

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    def checksum(self) -> str:
        """A1111's 16-bit `checksum()` of the vectors (specs §3.2), written to `.optim` files."""
        r = 0
        for v in (self.vectors.detach().float().cpu().reshape(-1) * 100).tolist():
            r = (r * 281 ^ int(v) * 997) & 0xFFFFFFFF
        return f"{r & 0xFFFF:04x}"


def embedding_from_data(data: Any, name: str, *, source: str, from_image: bool = False) -> Embedding:
    """An `Embedding` from a loaded payload, with A1111's rules (specs §3.1)."""
    if not isinstance(data, Mapping):
        raise ModelLoadError(f"{source}: not an embedding (expected a dict, found {type(data).__name__})")
    if from_image and isinstance(data.get("name"), str) and data["name"]:
        name = data["name"]
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, Mapping) or len(params) != 1:
            count = len(params) if isinstance(params, Mapping) else 0
            raise ModelLoadError(
                f"{source}: embedding file has multiple terms in it ({count} in string_to_param; expected 1)"
            )
        vectors = next(iter(params.values()))
        layout = "a1111"
    elif "clip_g" in data and "clip_l" in data:
        vectors = torch.cat([_tensor(data["clip_l"], source), _tensor(data["clip_g"], source)], dim=-1)
        layout = "sdxl"
    elif type(data) is dict and len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        key, vectors = next(iter(data.items()))
        layout = "kohya" if key == "emb_params" else "diffusers"
    else:
        keys = ", ".join(repr(k) for k in list(data)[:5])
        raise ModelLoadError(
            f"{source}: not a textual-inversion embedding (no 'string_to_param', not one tensor; keys {keys})"
        )
    vectors = _tensor(vectors, source)
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ModelLoadError(f"{source}: embedding vectors have shape {tuple(vectors.shape)}; expected [n, width]")
    step = data.get("step")
    provenance = read_provenance(data.get(PROVENANCE_KEY))
    return Embedding(
        name=str(name),
        vectors=vectors.detach().to(torch.float32).contiguous(),
        step=int(step) if isinstance(step, int | float) and not isinstance(step, bool) else None,
        sd_checkpoint=_optional_str(data.get("sd_checkpoint")),
        sd_checkpoint_name=_optional_str(data.get("sd_checkpoint_name")),
        layout=layout,
        provenance=provenance,
    )


def _tensor(value: Any, source: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"{source}: embedding vectors are a {type(value).__name__}, not a tensor")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def load_embedding(path: str | Path) -> Embedding:
    """Load one embedding file of any supported layout (see the module docstring).

    Raises `NotAnEmbedding` for an image without embedding data, `UnsafeFileError` for a
    pickle that asks for code, `ModelLoadError` for anything else unreadable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    source = str(path)
    if suffix in IMAGE_SUFFIXES:
        found = _read_image(path)
        if found is None:
            raise NotAnEmbedding(f"{path}: the image holds no embedding (a preview?)")
        data, how = found
        embedding = embedding_from_data(data, path.stem, source=source, from_image=True)
        embedding.layout = how
    else:
        if path.is_file() and path.stat().st_size == 0:
            raise ModelLoadError(f"{path}: the file is empty")
        is_safetensors = sniff_format(path) == SAFETENSORS
        if is_safetensors:
            data, meta = load_tensors(path)
        else:
            data = load_pickle(path)
        embedding = embedding_from_data(data, path.stem, source=source)
        if is_safetensors:
            if embedding.step is None and meta.get("step", "").isdigit():
                embedding.step = int(meta["step"])
            embedding.sd_checkpoint = embedding.sd_checkpoint or meta.get("sd_checkpoint")
            embedding.sd_checkpoint_name = embedding.sd_checkpoint_name or meta.get("sd_checkpoint_name")
            embedding.provenance = embedding.provenance or read_provenance(meta.get(PROVENANCE_KEY))
    embedding.path = path
    embedding.sha256 = sha256_file(path)
    return embedding


def _read_image(path: Path) -> tuple[Any, str] | None:
    """The embedding data of an image file (see `read_image_data`). Its size is checked before
    its pixels are decoded, its text chunks before they are read (a small file can declare a
    gigapixel image or a chunk that inflates to gigabytes)."""
    with open_regular_file(path) as f:
        size = check_png_text_chunks(f, path, MAX_EMBEDDING_TEXT_BYTES, ModelLoadError)
        try:
            with Image.open(f) as image:
                if image.width * image.height > MAX_EMBEDDING_PIXELS:
                    raise _too_many_pixels(path, image.size)
                image.load()
                return read_image_data(image)
        except HiddenDataTooLarge as e:
            raise ModelLoadError(f"{path}: {e}") from None
        except Image.DecompressionBombError:  # PIL refuses to even open one over 179 megapixels
            raise _too_many_pixels(path, size or (0, 0)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ModelLoadError(f"{path}: not a readable image ({e})") from None


def _too_many_pixels(path: Path, size: tuple[int, int]) -> ModelLoadError:
    return ModelLoadError(f"{path}: {size[0]}×{size[1]} pixels, more than the {MAX_EMBEDDING_PIXELS:,} allowed "
                          "for an embedding image (a decompression bomb?)")


def a1111_data(embedding: Embedding) -> dict[str, Any]:
    """The dict A1111's `Embedding.save` writes (specs §3.2); also the image payload. emaki's
    provenance goes in an extra key (A1111 ignores keys it does not know)."""
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": embedding.vectors.detach().cpu().to(torch.float32).clone()},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.sd_checkpoint,
        "sd_checkpoint_name": embedding.sd_checkpoint_name,
    }
    if embedding.provenance is not None:
        data[PROVENANCE_KEY] = json.dumps(embedding.provenance, sort_keys=True)
    return data


def save_embedding(embedding: Embedding, path: str | Path, *, picture: Image.Image | None = None) -> Path:
    """Write `embedding` as `.pt`/`.bin` (A1111 layout, plain containers only), `.safetensors`
    (`emb_params`, name/step in the metadata) or `.png`/`.webp` (a card A1111 reads back;
    `picture` replaces the generated card art)."""
    from safetensors.torch import save_file

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*PICKLE_SUFFIXES, ".safetensors", ".png", ".webp"):
        raise ModelLoadError(
            f"{path}: cannot save an embedding as {suffix or 'a file without extension'!r}; "
            "use .pt, .bin, .safetensors, .png or .webp"
        )
    with atomic_write(path) as tmp:
        if suffix in PICKLE_SUFFIXES:
            torch.save(a1111_data(embedding), tmp)
        elif suffix == ".safetensors":
            tensors = {"emb_params": embedding.vectors.detach().cpu().to(torch.float32).contiguous()}
            meta = {k: str(v) for k, v in (("name", embedding.name), ("step", embedding.step),
                                           ("sd_checkpoint", embedding.sd_checkpoint),
                                           ("sd_checkpoint_name", embedding.sd_checkpoint_name))
                    if v is not None}
            if embedding.provenance is not None:
                meta[PROVENANCE_KEY] = json.dumps(embedding.provenance, sort_keys=True)
            save_file(tensors, str(tmp), metadata=meta)
        else:
            data = a1111_data(embedding)
            art = picture if picture is not None else embedding_card(embedding.name, embedding.vectors)
            image = hide_in_pixels(art, data, embedding.vectors[0].detach().float().cpu().numpy())
            if suffix == ".png":
                from PIL.PngImagePlugin import PngInfo

                info = PngInfo()
                info.add_text(TEXT_CHUNK_KEY, embedding_to_b64(data))
                image.save(tmp, format="PNG", pnginfo=info)
            else:
                image.save(tmp, format="WEBP", lossless=True, quality=100)
    return path


def read_provenance(value: Any) -> dict[str, Any] | None:
    """The provenance JSON a trained file carries; None when absent or not a JSON object."""
    if not isinstance(value, str):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

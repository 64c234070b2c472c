"""Reading tensors from files users download: safetensors first, pickles only restricted.

The format is sniffed from the first bytes, never from the extension. Pickled files
(`.ckpt`, `.pt`, `.bin`) go through torch's `weights_only` unpickler with a narrow allowlist of
the extra globals real checkpoints carry (specs/FORMATS.md §7.2); anything else is refused
before it can run.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from emaki.errors import ModelLoadError, UnsafeFileError
from emaki.models.safetensors_header import read_safetensors_metadata, safetensors_data_start

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"


class _LightningModelCheckpoint:
    """Stands in for `pytorch_lightning...ModelCheckpoint` state found in SD training ckpts."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _allowlist() -> list[Any]:
    import numpy as np

    allowed: list[Any] = [
        collections.OrderedDict,
        torch.nn.ParameterDict,
        argparse.Namespace,
        set,
        (_LightningModelCheckpoint, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        np.dtype,
        np.ndarray,
    ]
    # numpy scalars pickle through `multiarray.scalar` and per-type dtype classes.
    from numpy._core import multiarray

    allowed += [multiarray.scalar, multiarray._reconstruct]
    allowed += [(multiarray.scalar, "numpy.core.multiarray.scalar")]
    allowed += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "float16")]
    import codecs

    allowed.append(codecs.encode)
    return allowed


def sniff_format(path: Path) -> str:
    """SAFETENSORS, TORCH_ZIP or TORCH_LEGACY, from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path}: is a folder, expected a model file") from None
    if len(head) == 0:
        raise ModelLoadError(f"{path}: the file is empty")
    if head[:4] == b"PK\x03\x04":
        return TORCH_ZIP
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return TORCH_LEGACY
    if len(head) >= 9 and head[8:9] == b"{":
        safetensors_data_start(path)  # refuses a header longer than the file
        return SAFETENSORS
    raise ModelLoadError(
        f"{path}: not a model file (expected safetensors or a PyTorch checkpoint; "
        f"first bytes {head[:8]!r})"
    )


_UNSUPPORTED_GLOBAL = re.compile(r"(?:Unsupported global|GLOBAL|Unsupported operand)[:\s]+(\S+)")


def load_pickle(path: Path, *, map_location: str = "cpu") -> Any:
    """`torch.load` restricted to tensors, containers and the allowlisted globals
    (`map_location="meta"` builds shape-only tensors)."""
    try:
        with torch.serialization.safe_globals(_allowlist()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSUPPORTED_GLOBAL.search(str(e))
        what = found.group(1) if found else "an object outside the allowlist"
        raise UnsafeFileError(
            f"{path}: refused to load: the pickle asks for {what}, which is not allowed "
            "(only tensors and plain containers are; nothing in the file was executed)"
        ) from None
    except Exception as e:  # noqa: BLE001 (damaged files fail in many ways inside torch.load)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: corrupt or truncated checkpoint ({first_line})") from None


def load_tensors(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(contents, safetensors metadata) of any supported tensor file; pickles restricted."""
    path = Path(path)
    kind = sniff_format(path)
    if kind == SAFETENSORS:
        metadata = read_safetensors_metadata(path)  # names what is wrong with a bad header
        try:
            return dict(load_file(str(path))), metadata
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: corrupt safetensors file ({e})") from None
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return data, {}

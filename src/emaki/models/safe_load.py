"""Reading tensors from files users download: safetensors first, pickles only restricted.

The format is sniffed from the first bytes, never from the extension; only regular files are
opened. Pickled files (`.ckpt`, `.pt`, `.bin`) go through torch's `weights_only` unpickler with a
narrow allowlist of the extra globals real checkpoints carry (specs/FORMATS.md §7.2); anything else
is refused before it can run. Before that, a census of the pickle (`pickle_census`) checks every
storage it declares against the bytes the file holds and refuses sparse tensors.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from emaki.errors import EmakiError, ModelLoadError, UnsafeFileError
from emaki.models.cast_read import CastReader
from emaki.models.pickle_census import (
    PickleCensus,
    check_dense_only,
    check_legacy_storages,
    check_zip_storages,
    legacy_census,
    zip_census,
)
from emaki.models.regular_files import open_regular_file
from emaki.models.safetensors_header import (
    header_metadata,
    read_checked_safetensors_header,
    safetensors_data_start,
)

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
    with open_regular_file(path) as f:
        head = f.read(16)
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


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+?)[.,]?(?:\s|$)")


def _census(path: Path) -> PickleCensus:
    """Check what the pickle declares before torch allocates or rebuilds anything."""
    try:
        return _checked_census(path)
    except EmakiError:
        raise
    except Exception as e:  # noqa: BLE001 (a damaged archive fails in many ways inside zipfile)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: corrupt or truncated checkpoint ({first_line})") from None


def _checked_census(path: Path) -> PickleCensus:
    kind = sniff_format(path)
    census = PickleCensus()
    if kind == TORCH_ZIP:
        census, records = zip_census(path)
        check_zip_storages(census, records, path)
    elif kind == TORCH_LEGACY:
        census, remaining = legacy_census(path)
        if remaining is not None:
            check_legacy_storages(census, remaining, path)
    check_dense_only(census, path)
    return census


def _refused(path: Path, error: pickle.UnpicklingError, census: PickleCensus) -> UnsafeFileError:
    found = _REFUSED_GLOBAL.search(str(error))
    what = census.global_named(found.group(1)) if found else "an object outside the allowlist"
    return UnsafeFileError(
        f"{path}: refused to load: the pickle asks for {what}, which is not allowed "
        "(only tensors and plain containers are; nothing in the file was executed)"
    )


def _check_dense(data: Any, path: Path) -> None:
    """No sparse, nested or other non-strided tensor anywhere in `data` (walked without recursion)."""
    pending, seen = [data], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.layout != torch.strided or item.is_nested:
                raise ModelLoadError(f"{path}: holds a {item.layout} tensor; emaki reads dense tensors only")
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set):
            pending.extend(item)


# safetensors' names of the floating-point dtypes a checkpoint's weights come in.
STORED_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_cast(path: Path, dtype_of: Callable[[str], torch.dtype | None],
              header: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (its checked `header` says where each lies): those already in
    `dtype_of(key)` (or None: as stored) mapped from the file without a copy; the others read
    piece by piece and cast into memory of their own (`CastReader`), never held in two dtypes.

    Casting mapped tensors (what `load_file` gives) held the file and the cast weights at once:
    every page read stays counted in the process's memory (RSS) until the last tensor mapped
    from the file is gone (SD 1.5 fp16 at fp32: 2.1 + 4.3 GB)."""
    out: dict[str, torch.Tensor] = {}
    data_start = safetensors_data_start(path)
    with safe_open(str(path), framework="pt") as mapped, open_regular_file(path) as raw:
        reader = CastReader(raw, path)
        for key in sorted(k for k in header if k != "__metadata__"):  # the order safetensors lists them in
            entry = header[key]
            stored, wanted = STORED_FLOATS.get(entry["dtype"]), dtype_of(key)
            if stored is None or wanted is None or stored == wanted:
                out[key] = mapped.get_tensor(key)
            elif sys.byteorder == "little":  # the bytes as stored are this CPU's
                out[key] = reader.read(data_start + entry["data_offsets"][0], entry["shape"], stored, wanted)
            else:
                out[key] = mapped.get_tensor(key).to(wanted)  # safetensors swaps the bytes
    return out


def load_pickle(path: Path, *, map_location: str = "cpu") -> Any:
    """`torch.load` restricted to tensors, containers and the allowlisted globals
    (`map_location="meta"` builds shape-only tensors), after the census."""
    path = Path(path)
    census = _census(path)
    try:
        with torch.serialization.safe_globals(_allowlist()):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e, census) from None
    except Exception as e:  # noqa: BLE001 (damaged files fail in many ways inside torch.load)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: corrupt or truncated checkpoint ({first_line})") from None
    _check_dense(data, path)
    return data


def load_tensors(path: str | Path, dtype_of: Callable[[str], torch.dtype | None] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """(contents, safetensors metadata) of any supported tensor file; pickles restricted.

    With `dtype_of`, a safetensors file's floating-point tensors come in the dtype it gives for
    their key (None: as stored), read and cast one at a time (`read_cast`)."""
    path = Path(path)
    kind = sniff_format(path)
    if kind == SAFETENSORS:
        header = read_checked_safetensors_header(path)  # names what is wrong
        try:
            data = dict(load_file(str(path))) if dtype_of is None else read_cast(path, dtype_of, header)
            return data, header_metadata(header)
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: corrupt safetensors file ({e})") from None
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return data, {}

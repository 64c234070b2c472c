"""What a PyTorch pickle declares, read before torch loads it: the globals it names and the size of
every storage, checked against the bytes the file really holds.

torch allocates each storage at the size its pickle declares (the legacy format before reading a
byte of it), so a few bytes declaring 2^40 elements would reserve terabytes; and it rebuilds
sparse tensors without checking their indices (densifying a bad one crashes the process). The
census runs the pickle with an unpickler in which every global is an inert stand-in: nothing the
file names is imported or called, nothing is built but plain containers.

Layouts (torch/serialization.py): a zip archive `<name>/data.pkl` whose persistent ids are
`("storage", StorageType, key, location, numel)`, the bytes in records `<name>/data/<key>`; or the
legacy stream: pickled magic number, protocol, system info, the object (ids
`("storage", StorageType, key, location, numel, view)`), the storage keys, then the raw storages.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from emaki.errors import ModelLoadError
from emaki.models.regular_files import open_regular_file

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_DENSE_ONLY = ("sparse", "_rebuild_nested_tensor")


@dataclass
class PickleCensus:
    """The globals a pickle names ("module.name") and its storages: key → declared bytes."""

    globals: set[str] = field(default_factory=set)
    storages: dict[str, int] = field(default_factory=dict)

    def record(self, pid: Any, source: Path) -> None:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            return  # not a storage: torch refuses what it does not know
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if type(numel) is not int or numel < 0:
            raise ModelLoadError(f"{source}: storage {key!r} declares {numel!r} elements; expected a count")
        nbytes = numel * _element_size(getattr(storage_type, "pickled_name", ""))
        self.storages[key] = max(nbytes, self.storages.get(key, 0))

    def global_named(self, token: str) -> str:
        """The full "module.name" of a global torch's message names by `token` (it drops `builtins.`)."""
        return next((g for g in sorted(self.globals) if g == token or g.endswith("." + token)), token)


def _element_size(storage_name: str) -> int:
    """Bytes per element of a pickled storage class ("FloatStorage" → 4); 1 when unknown."""
    import torch

    if storage_name == "UntypedStorage":
        return 1
    try:
        return int(torch.serialization.StorageType(storage_name).dtype.itemsize)
    except (KeyError, AttributeError):
        return 1  # torch refuses a storage class it does not know


class _Inert:
    """Stands for every global and everything built from one: accepts any call, state or item."""

    pickled_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


class _CensusUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, census: PickleCensus, source: Path) -> None:
        super().__init__(file)
        self.census = census
        self.source = source
        self._stand_ins: dict[str, type[_Inert]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell Python 3 names the Python 2 way (`__builtin__.eval`).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        self.census.globals.add(full)
        if full not in self._stand_ins:
            self._stand_ins[full] = type("StandIn", (_Inert,), {"pickled_name": name})
        return self._stand_ins[full]

    def persistent_load(self, pid: Any) -> Any:
        self.census.record(pid, self.source)
        return _Inert()


def _run(file: BinaryIO, census: PickleCensus, source: Path) -> Any:
    try:
        return _CensusUnpickler(file, census, source).load()
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001  (a damaged pickle fails in many ways)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{source}: corrupt or truncated checkpoint ({first})") from None


def zip_census(path: Path) -> tuple[PickleCensus, dict[str, int]]:
    """The census of a torch zip archive, and its storage records' sizes by key."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: corrupt checkpoint archive ({e})") from None
    with archive:
        infos = archive.infolist()
        prefix = infos[0].filename.split("/", 1)[0] if infos else ""
        records: dict[str, int] = {}
        pickled: zipfile.ZipInfo | None = None
        for info in infos:
            if info.filename == f"{prefix}/data.pkl":
                pickled = info
            elif info.filename.startswith(f"{prefix}/data/"):
                records[info.filename[len(prefix) + 6:]] = info.file_size
            else:
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                # torch writes every record uncompressed; an inflating one could be a zip bomb
                raise ModelLoadError(f"{path}: record {info.filename!r} is compressed; torch never writes that")
        if pickled is None:
            raise ModelLoadError(f"{path}: not a PyTorch checkpoint archive (no {prefix}/data.pkl)")
        census = PickleCensus()
        with archive.open(pickled) as f:
            _run(f, census, path)  # type: ignore[arg-type]
    return census, records


def legacy_census(path: Path) -> tuple[PickleCensus, int | None]:
    """The census of a legacy (pre-zip) torch file and the bytes after its pickles. A pickle
    that does not start with torch's magic number is counted up to there only (None: torch.load
    refuses it, and the census names the globals it asked for)."""
    census = PickleCensus()
    with open_regular_file(path) as f:
        if _run(f, census, path) != LEGACY_MAGIC_NUMBER:
            return census, None
        for _ in range(4):  # protocol, system info, the object, the storage keys
            _run(f, census, path)
        return census, os.fstat(f.fileno()).st_size - f.tell()


def check_dense_only(census: PickleCensus, path: Path) -> None:
    """Refuse sparse and nested tensors before torch rebuilds them."""
    for name in sorted(census.globals):
        if any(part in name for part in _DENSE_ONLY):
            kind = "sparse" if "sparse" in name else "nested"
            raise ModelLoadError(
                f"{path}: holds a {kind} tensor ({name}); emaki reads dense tensors only "
                "(torch does not check a sparse tensor's indices, and a bad one crashes the process)"
            )


def check_zip_storages(census: PickleCensus, records: dict[str, int], path: Path) -> None:
    """Every declared storage has a record at least as large as it declares."""
    for key, declared in census.storages.items():
        held = records.get(key)
        if held is None:
            raise ModelLoadError(f"{path}: storage {key!r} has no data in the archive; corrupt checkpoint")
        if declared > held:
            raise ModelLoadError(f"{path}: storage {key!r} declares {declared:,} bytes; the file holds {held:,} "
                                 "for it (a corrupt or hostile checkpoint)")


def check_legacy_storages(census: PickleCensus, remaining: int, path: Path) -> None:
    """The declared storages fit in the bytes that follow the pickles."""
    for key, declared in census.storages.items():
        if declared > remaining:
            raise ModelLoadError(f"{path}: storage {key!r} declares {declared:,} bytes; the file holds {remaining:,} "
                                 "after its pickles (a corrupt or hostile checkpoint)")
    total = sum(census.storages.values())
    if total > remaining:
        raise ModelLoadError(f"{path}: its storages declare {total:,} bytes; the file holds {remaining:,} after its "
                             "pickles (a corrupt or hostile checkpoint)")

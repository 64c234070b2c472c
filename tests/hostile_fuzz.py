"""A seeded corpus of malformed files thrown at every loader, run in a child process so that the
test can bound its time and read its peak memory (`python tests/hostile_fuzz.py FOLDER`).

Each case is a small valid file (safetensors, torch pickle, legacy pickle, PNG with infotext or an
embedding, merge recipe) broken one way: bytes flipped, cut short, grown, a length field or a
chunk rewritten. Every loader that accepts the file's kind must either load it or raise an
`EmakiError` whose message is one line naming the file. One JSON line per case is printed, then a
summary line with the child's peak RSS.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import resource
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SEED = 20261203
MUTANTS_PER_SEED_FILE = 24


def _safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"emb_params": torch.randn(2, 8), "step": torch.tensor([3.0])}, metadata={"a": "b"})


def _torch_zip_bytes() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"string_to_param": {"*": torch.randn(2, 8)}, "name": "x", "step": 5}, buffer)
    return buffer.getvalue()


def _legacy_pickle_bytes() -> bytes:
    return pickle.dumps({"name": "x", "step": 5, "layer_structure": [1, 2, 1]}, protocol=2)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(text: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _recipe_bytes() -> bytes:
    recipe = {"mode": "weighted-sum", "alpha": 0.5, "discard": "^model_ema\\.",
              "inputs": {"a": {"path": "a.safetensors"}, "b": {"path": "b.safetensors"}}}
    return json.dumps(recipe).encode()


def _mutants(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """`MUTANTS_PER_SEED_FILE` broken copies of `data`, each named by what was done to it."""
    for index in range(MUTANTS_PER_SEED_FILE):
        way = index % 6
        blob = bytearray(data)
        if way == 0:
            for _ in range(rng.randint(1, 8)):
                blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
            yield f"flip{index}", bytes(blob)
        elif way == 1:
            yield f"cut{index}", bytes(blob[: rng.randrange(len(blob))])
        elif way == 2:
            at = rng.randrange(len(blob))
            yield f"grow{index}", bytes(blob[:at] + rng.randbytes(rng.randint(1, 64)) + blob[at:])
        elif way == 3:
            # A length/size field rewritten with a huge or odd value (safetensors' header length,
            # a PNG chunk length, a zip field).
            at = rng.randrange(max(1, len(blob) - 8))
            blob[at:at + 8] = struct.pack("<Q", rng.choice([2**63 - 1, 2**62, 2**40, 0, 2**32 + 7]))
            yield f"length{index}", bytes(blob)
        elif way == 4:
            yield f"zero{index}", bytes(len(blob))
        else:
            at = rng.randrange(len(blob))
            yield f"splice{index}", bytes(blob[:at] + blob[at // 2:])


def _hostile_pngs() -> Iterator[tuple[str, bytes]]:
    """PNGs that are valid except for what they carry: a huge text chunk, a decompression bomb
    in a zTXt chunk and in the pixels, an IHDR that claims a giant image."""
    base = _png_bytes("1girl\nSteps: 20, Sampler: Euler a, Seed: 1")
    head, rest = base[:33], base[33:]  # signature + IHDR
    big_text = _png_chunk(b"tEXt", b"parameters\x00" + b"a" * 4_000_000)
    yield "bigtext", head + big_text + rest
    bomb = zlib.compress(b"\x00" * 200_000_000, 9)
    yield "ztxtbomb", head + _png_chunk(b"zTXt", b"parameters\x00\x00" + bomb) + rest
    giant = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    ihdr = _png_chunk(b"IHDR", giant)
    pixels = zlib.compress(b"\x00" * 20_000_000, 9)
    yield "pixelbomb", base[:8] + ihdr + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def _hostile_recipes() -> Iterator[tuple[str, bytes]]:
    # Written as text: json.dumps itself recurses too deep on 900 levels.
    deep = '{"mode": "weighted-sum", "inputs": {"a": ' * 900 + '{"path": "a"}' + "}}" * 900
    yield "deep", deep.encode()
    yield "listmeta", json.dumps({"mode": "weighted-sum", "metadata": [1, 2, 3],
                                  "inputs": {"a": {"path": "a"}, "b": {"path": "b"}}}).encode()
    yield "notdict", b"[1, 2, 3]"
    yield "bigint", json.dumps({"mode": "weighted-sum", "alpha": 10**400,
                                "inputs": {"a": {"path": "a"}, "b": {"path": "b"}}}).encode()
    yield "backtrack", json.dumps({"mode": "weighted-sum", "discard": "(a+)+$",
                                   "inputs": {"a": {"path": "a"}, "b": {"path": "b"}}}).encode()


def cases() -> Iterator[tuple[str, str, bytes]]:
    """(case name, file suffix, bytes) for every seed file's mutants and the hand-made hostiles."""
    rng = random.Random(SEED)
    seeds: list[tuple[str, str, Callable[[], bytes]]] = [
        ("safetensors", ".safetensors", _safetensors_bytes),
        ("torchzip", ".pt", _torch_zip_bytes),
        ("legacypickle", ".ckpt", _legacy_pickle_bytes),
        ("png", ".png", lambda: _png_bytes("1girl, red hair\nSteps: 20, Sampler: Euler a, Seed: 1")),
        ("recipe", ".json", _recipe_bytes),
    ]
    for name, suffix, make in seeds:
        for mutant, data in _mutants(make(), rng):
            yield f"{name}-{mutant}", suffix, data
    for name, data in _hostile_pngs():
        yield f"png-{name}", ".png", data
    for name, data in _hostile_recipes():
        yield f"recipe-{name}", ".json", data


def loaders() -> dict[str, list[tuple[str, Callable[[Path], Any]]]]:
    """The loaders that a file of each suffix reaches in emaki, by suffix."""
    from emaki.infotext import read_infotext
    from emaki.merge.recipe import load_recipe
    from emaki.models.safe_load import load_tensors
    from emaki.networks.embeddings import load_embedding
    from emaki.networks.hypernetworks import load_hypernetwork
    from emaki.networks.lora.formats import read_lora_file

    tensors = [("load_tensors", load_tensors), ("load_embedding", load_embedding), ("read_lora_file", read_lora_file)]
    return {
        ".safetensors": [*tensors, ("load_recipe", load_recipe)],
        ".pt": [*tensors, ("load_hypernetwork", load_hypernetwork)],
        ".ckpt": [*tensors, ("load_hypernetwork", load_hypernetwork)],
        ".png": [("read_infotext", read_infotext), ("load_embedding", load_embedding)],
        ".json": [("load_recipe", load_recipe)],
    }


def outcome(loader: Callable[[Path], Any], path: Path) -> dict[str, Any]:
    from emaki.errors import EmakiError

    try:
        loader(path)
    except EmakiError as e:
        return {"result": "refused", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - what the test reports as a fault
        return {"result": "crashed", "message": f"{type(e).__name__}: {str(e)[:300]}"}
    return {"result": "loaded"}


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_suffix = loaders()
    for name, suffix, data in cases():
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        for loader_name, loader in by_suffix[suffix]:
            print(json.dumps({"case": name, "file": path.name, "loader": loader_name, **outcome(loader, path)}),
                  flush=True)
    print(json.dumps({"summary": True, "peak_rss_mib": peak_rss_kib() / 1024}), flush=True)


def peak_rss_kib() -> int:
    """This program's own peak RSS: `VmHWM`, of the memory it has had since it started. Not
    `ru_maxrss`, which Linux carries over an `exec`: started by a big pytest process, it would
    report that process's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main(Path(sys.argv[1]))

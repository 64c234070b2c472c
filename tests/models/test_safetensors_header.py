"""Reading a safetensors header: the one parser, and the errors that name the file."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from emaki.errors import ModelLoadError
from emaki.models.safetensors_header import (
    read_safetensors_header,
    read_safetensors_metadata,
    safetensors_data_start,
)


def test_header_metadata_and_data_start(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_file({"x": torch.arange(4, dtype=torch.float32)}, str(path), metadata={"step": "7"})
    header = read_safetensors_header(path)
    assert header["x"]["shape"] == [4] and header["__metadata__"] == {"step": "7"}
    assert read_safetensors_metadata(path) == {"step": "7"}
    start = safetensors_data_start(path)
    assert path.read_bytes()[start:] == torch.arange(4, dtype=torch.float32).numpy().tobytes()


def _raw(tmp_path, name: str, length: int, body: bytes):
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", length) + body)
    return path


@pytest.mark.parametrize(
    ("name", "length", "body", "message"),
    [
        ("short.safetensors", 400, b"{}", "short.safetensors: truncated safetensors file"),
        ("junk.safetensors", 9, b"{not json", "junk.safetensors: corrupt safetensors header .not JSON"),
        ("list.safetensors", 2, b"[]", "list.safetensors: corrupt safetensors header .not a JSON object"),
    ],
)
def test_bad_headers_name_the_file(tmp_path, name, length, body, message):
    path = _raw(tmp_path, name, length, body)
    with pytest.raises(ModelLoadError, match=message):
        read_safetensors_header(path)


def test_no_metadata_is_empty(tmp_path):
    text = json.dumps({"__metadata__": "not a dict"}).encode()
    assert read_safetensors_metadata(_raw(tmp_path, "m.safetensors", len(text), text)) == {}
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x00")
    with pytest.raises(ModelLoadError, match="tiny.safetensors: truncated"):
        safetensors_data_start(tmp_path / "tiny.safetensors")

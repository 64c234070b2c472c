"""A tensor cast as it is read (`emaki.models.cast_read`): torch's own values, in pieces, and
never the whole tensor at its stored dtype as well."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from emaki.errors import ModelLoadError
from emaki.models.cast_read import CastReader

# Values where a cast can go wrong: rounding ties, fp16's largest and smallest, subnormals, inf, nan, -0.
SPECIAL = [0.0, -0.0, 1.0, 1.00390625, 1.01171875, 65504.0, -65504.0, 6.1e-05, 5.96e-08, 1e-07,
           float("inf"), float("-inf"), float("nan"), 3.14159, -2.71828]


@pytest.mark.parametrize(("stored", "wanted"), [
    (torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16), (torch.float16, torch.float32),
    (torch.float32, torch.bfloat16), (torch.float64, torch.float32), (torch.bfloat16, torch.float32),
])
def test_read_gives_torchs_cast_bit_for_bit_across_pieces(tmp_path, stored, wanted):
    spread = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 300
    values = torch.cat([torch.tensor(SPECIAL, dtype=torch.float64), spread])
    tensor = values.to(stored).reshape(5, 11)
    path = tmp_path / "t.bin"
    path.write_bytes(b"xyz" + tensor.view(torch.uint8).numpy().tobytes())
    with open(path, "rb") as f:
        got = CastReader(f, path, chunk_elements=7).read(3, [5, 11], stored, wanted)  # 8 pieces, the last short
        empty = CastReader(f, path, chunk_elements=7).read(3, [0, 4], stored, wanted)
    assert got.dtype == wanted and got.shape == (5, 11)
    expected = tensor.to(wanted)
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan)  # a NaN stays a NaN; its bit pattern may differ (sign, payload)
    assert torch.equal(got[~nan].view(torch.uint8), expected[~nan].view(torch.uint8))
    assert empty.shape == (0, 4) and empty.dtype == wanted


def test_a_file_shorter_than_its_tensor_is_named(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(bytes(10))
    with open(path, "rb") as f, pytest.raises(ModelLoadError, match="short.bin: the file ended"):
        CastReader(f, path, chunk_elements=4).read(0, [8], torch.float16, torch.float32)


PEAK_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from emaki.models.safe_load import load_tensors

    def status(field):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    before = status("VmRSS")
    data, _ = load_tensors(Path(sys.argv[1]), lambda key: torch.bfloat16)
    print(json.dumps(status("VmHWM") - before))
''')


def test_a_cast_tensor_is_not_also_held_at_its_stored_dtype(tmp_path):
    """One 64 MB fp16 tensor read as bf16: the process grows by the 64 MB it keeps and a few MB
    of buffers (measured 1.10x), not by a 64 MB fp16 copy as well (2.04x, before)."""
    path = tmp_path / "one.safetensors"
    save_file({"w": torch.ones(4096, 8192, dtype=torch.float16)}, str(path))
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True,
                         timeout=300)
    assert json.loads(out.stdout) <= 1.25 * 4096 * 8192 * 2

"""Loading a .safetensors checkpoint casts each tensor as it is read: the right dtypes and values,
and no moment where the file and the cast weights are both held."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from emaki.models.convert import TEXT_ENCODER_PREFIX, UNET_PREFIX, VAE_PREFIX
from emaki.models.loader import load_single_file
from emaki.models.safe_load import load_tensors


def test_weights_come_in_the_asked_dtype_with_the_files_values(tiny_safetensors, tiny_components):
    stored = load_file(str(tiny_safetensors))
    parts = load_single_file(tiny_safetensors, torch.bfloat16)
    assert {p.dtype for p in parts.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in parts.vae.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in parts.text_encoder.parameters()} == {torch.float32}
    conv = stored[UNET_PREFIX + "input_blocks.0.0.weight"]
    assert torch.equal(parts.unet.conv_in.weight, conv.to(torch.bfloat16))
    assert torch.equal(parts.vae.decoder.conv_out.weight, stored[VAE_PREFIX + "decoder.conv_out.weight"].bfloat16())


def test_keys_without_a_dtype_stay_as_stored(tmp_path):
    path = tmp_path / "mixed.safetensors"
    schedule = torch.linspace(0.9999, 0.0047, 1000, dtype=torch.float64)
    save_file({UNET_PREFIX + "w": torch.ones(2, dtype=torch.float16), TEXT_ENCODER_PREFIX + "w": torch.ones(2),
               "alphas_cumprod": schedule, "steps": torch.arange(3)}, str(path))
    dtypes = {UNET_PREFIX: torch.bfloat16, TEXT_ENCODER_PREFIX: torch.float32}
    data, _ = load_tensors(path, lambda key: next((d for p, d in dtypes.items() if key.startswith(p)), None))
    assert data[UNET_PREFIX + "w"].dtype == torch.bfloat16 and data[TEXT_ENCODER_PREFIX + "w"].dtype == torch.float32
    assert torch.equal(data["alphas_cumprod"], schedule) and data["steps"].dtype == torch.int64


PEAK_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    from emaki.models.safe_load import load_tensors

    def status(field):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    peaks = {}
    for dtype in (torch.float16, torch.float32):  # mapped first: it leaves the high-water mark where it was
        before = status("VmRSS")
        data, _ = load_tensors(Path(sys.argv[1]), lambda key: dtype)
        peaks[str(dtype)] = status("VmHWM") - before
        del data
    print(json.dumps(peaks))
''')


@pytest.fixture(scope="module")
def peaks(tmp_path_factory) -> dict[str, int]:
    """How much a fresh process grows loading 48 MB of fp16 weights (12 tensors) as fp16, then
    as fp32 (96 MB)."""
    path = tmp_path_factory.mktemp("mmap") / "big.safetensors"
    save_file({f"{UNET_PREFIX}{i}": torch.full((1024, 2048), i, dtype=torch.float16) for i in range(12)}, str(path))
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, check=True,
                         timeout=300)
    return json.loads(out.stdout)


FP32_BYTES = 12 * 1024 * 2048 * 4


def test_casting_holds_no_second_copy_of_the_file(peaks):
    """Read as fp32, the process grows by the fp32 weights and one tensor (measured 1.02x), not
    by the file as well (casting the mapped file: 1.5x)."""
    assert peaks["torch.float32"] <= 1.15 * FP32_BYTES, peaks


def test_tensors_already_in_the_dtype_are_mapped_not_copied(peaks):
    """Loading them takes no memory for the weights until they are used: a copy would be the file's
    48 MB; the process grows by a few MB at most (0 to 8.5 MB measured: the loader's own pages)."""
    assert peaks["torch.float16"] <= 0.25 * FP32_BYTES / 2, peaks

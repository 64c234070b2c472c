"""`--precision auto` (the default): bf16 on a CPU with native bf16, fp16 on CUDA, fp32 otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emaki.devices import DevicePolicy, auto_precision, cpu_flags
from emaki.errors import ParamsError

CPU = torch.device("cpu")
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
"""


def write_cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return path


@pytest.mark.parametrize(("extra", "expected"), [
    ("amx_bf16 amx_tile avx512_bf16", "bf16"),  # Sapphire Rapids and later
    ("avx512_bf16", "bf16"),  # AMD Zen 4: AVX-512 BF16, no AMX
    ("amx_bf16", "bf16"),
    ("avx512_vnni", "fp32"),  # AVX-512 without bf16: torch would emulate it, slower than fp32
    ("", "fp32"),
])
def test_auto_reads_the_cpu_flags(tmp_path, extra, expected):
    assert auto_precision(CPU, cpu_flags(write_cpuinfo(tmp_path, extra))) == expected


def test_a_flag_is_matched_as_a_whole_word(tmp_path):
    assert auto_precision(CPU, cpu_flags(write_cpuinfo(tmp_path, "xavx512_bf16 amx_bf16x"))) == "fp32"


def test_without_a_readable_cpuinfo_auto_falls_back_to_fp32(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert auto_precision(CPU, cpu_flags(tmp_path / "missing")) == "fp32"
    (tmp_path / "noflags").write_text("processor\t: 0\nmodel name\t: an ARM core\n")
    assert auto_precision(CPU, cpu_flags(tmp_path / "noflags")) == "fp32"


def test_cuda_runs_fp16_whatever_the_cpu():
    assert auto_precision(torch.device("cuda"), {"avx512_bf16"}) == "fp16"
    assert auto_precision(torch.device("cuda"), set()) == "fp16"


@pytest.mark.parametrize("precision", [None, "auto"])
def test_the_policy_chooses_by_the_cpu_unless_told(monkeypatch, precision):
    monkeypatch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset({"amx_bf16", "avx512_bf16"}))
    assert DevicePolicy.choose(precision, "cpu").precision == "bf16"
    assert DevicePolicy.choose(precision, "cpu").dtype == torch.bfloat16
    monkeypatch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset({"avx2"}))
    assert DevicePolicy.choose(precision, "cpu").precision == "fp32"


def test_an_explicit_precision_overrides_auto(monkeypatch):
    monkeypatch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset({"amx_bf16"}))
    assert DevicePolicy.choose("fp32", "cpu").precision == "fp32"
    monkeypatch.setattr("emaki.devices.cpu_flags", lambda *args: frozenset())
    assert DevicePolicy.choose("bf16", "cpu").precision == "bf16"  # asked for: runs (emulated) anyway


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ParamsError, match=r"precision: expected auto, fp32, bf16 or fp16, got 'fp8'"):
        DevicePolicy.choose("fp8", "cpu")
    with pytest.raises(ParamsError, match="fp16 runs on a GPU only"):
        DevicePolicy.choose("fp16", "cpu")


def test_tests_run_fp32_unless_they_ask():
    """The suite's goldens hold fp32 results: `tests/conftest.py` pins auto to fp32 here."""
    assert DevicePolicy.choose(None, "cpu").precision == "fp32"

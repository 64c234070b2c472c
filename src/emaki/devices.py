"""The one place that decides device, dtype, threads and memory layout for running a model."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from emaki.errors import ParamsError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # what --precision takes; auto: `auto_precision`
# CPU features that run bf16 natively (oneDNN's AVX-512 BF16 and AMX kernels). Without them
# torch emulates bf16 with fp32 arithmetic plus conversions, slower than plain fp32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
VaeTiling = Literal["auto", "on", "off"]
VAE_TILING_CHOICES = ("auto", "on", "off")  # what --vae-tiling takes; auto: `DevicePolicy.tiles_vae`
# Peak memory of a whole VAE pass (SD 1.5's VAE) per output pixel and per byte of its dtype: a
# 1024² bf16 decode took 2.6 GB above its weights (benchmarks/memory.py).
VAE_BYTES_PER_PIXEL_BYTE = 1250


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`flags : fpu vme ...`); empty where there is no
    such file (macOS, Windows) or it cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def auto_precision(device: torch.device, flags: Iterable[str]) -> Precision:
    """`--precision auto`: fp16 on CUDA; bf16 on a CPU with native bf16 (AVX-512 BF16 or AMX,
    `BF16_CPU_FLAGS`); fp32 otherwise.

    >>> auto_precision(torch.device("cpu"), {"avx512f", "amx_bf16"}), auto_precision(torch.device("cpu"), {"avx2"})
    ('bf16', 'fp32')
    """
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and BF16_CPU_FLAGS & set(flags):
        return "bf16"
    return "fp32"


def idle_cores() -> int:
    """Cores not already kept busy by other work (the 1-minute load average), at least 1.

    On a shared 2-core machine two torch threads, one of them fighting another process for its
    core, ran a 20-step demo image 20x slower than one thread (30-42 s vs 1.5 s)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on `device`: the GPU's free memory, or the system's
    `MemAvailable` (Linux; elsewhere physical pages free, or unknown: 2**62)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62


@dataclass(frozen=True)
class DevicePolicy:
    """Where and in which precision the UNet, VAE and text encoder run."""

    device: torch.device
    precision: Precision = "fp32"
    threads: int = 1  # torch's intra-op threads for CPU work
    vae_tiling: VaeTiling = "auto"  # `tiles_vae`
    # torch.compile on the UNet (`emaki.engine.speed.compile`): same math, a faster step after a
    # first one that compiles (minutes on 2 cores; cached on disk for the next process).
    compile: bool = False

    @classmethod
    def choose(cls, precision: str | None = None, device: str | None = None,
               threads: int | None = None, vae_tiling: str | None = None, compile: bool = False) -> DevicePolicy:
        """The policy for this machine: CUDA when present; the precision `auto_precision` picks
        unless `precision` says (None is auto); as many threads as there are idle cores
        (`threads` overrides, `--threads` on the surfaces)."""
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision is None or precision == "auto":
            precision = auto_precision(dev, cpu_flags())
        if precision not in PRECISION_CHOICES[1:]:
            raise ParamsError(f"precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
        if precision == "fp16" and dev.type == "cpu":
            raise ParamsError("precision: fp16 runs on a GPU only; use bf16 or fp32 on a CPU")
        if threads is not None and threads < 1:
            raise ParamsError(f"threads: expected 1 or more, got {threads}")
        if vae_tiling is not None and vae_tiling not in VAE_TILING_CHOICES:
            raise ParamsError(f"vae_tiling: expected auto, on or off, got {vae_tiling!r}")
        return cls(dev, precision, threads or idle_cores(), vae_tiling or "auto", compile)  # type: ignore[arg-type]

    def tiles_vae(self, pixels: int, available: int | None = None) -> bool:
        """Whether a VAE pass making (or reading) `pixels` pixels, all images of the batch, runs
        in tiles (`emaki.engine.vae_tiling`): always with `on`, never with `off`; with `auto` only
        when a whole pass would need more than half the memory `available` (default: free now),
        that is when the alternative is running out of memory: tiles normalise with their own
        statistics, so a tiled picture is not the whole pass's (docs/performance.md), and the
        default path changes no pixel. A whole SD 1.5 pass needs ~1.3 kB per pixel per byte of
        the VAE's dtype: 2.6 GB at 1024² in bf16, 10.5 GB at 2048²."""
        if self.vae_tiling != "auto":
            return self.vae_tiling == "on"
        need = pixels * VAE_BYTES_PER_PIXEL_BYTE * self.dtype.itemsize
        free = available_memory(self.device) if available is None else available
        return need > free // 2

    def apply(self) -> None:
        """Set torch's thread count (process-wide: torch has no other kind); done once by the
        engine that owns this policy, before it runs a model."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    @property
    def dtype(self) -> torch.dtype:
        """Weights and activations of the UNet and VAE. bf16 weights, not autocast: measured
        here, autocast spends its gain on casts (SD 1.5 UNet step at 256²: 6.3 s bf16
        weights vs 7.0 s autocast vs 6.6 s fp32, one run on a busy machine)."""
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def channels_last(self) -> bool:
        # Measured here: channels_last makes CPU convolutions ~13% faster (ENVIRONMENT.md).
        return self.device.type == "cpu"

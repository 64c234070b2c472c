"""CUDA's `torch.randn` on the CPU: Philox4x32-10 counters + Box–Muller, as A1111's "NV" RNG source.

Philox4x32-10 is the counter-based generator of Salmon et al. 2011, "Parallel Random Numbers:
As Easy as 1, 2, 3" (10 rounds, multipliers 0xD2511F53 / 0xCD9E8D57, Weyl key increments
0x9E3779B9 / 0xBB67AE85), which cuRAND and PyTorch's CUDA generator use. A normal number is
cuRAND's Box–Muller of the first two 32-bit outputs: sqrt(-2 ln u) sin(2 pi v) with
u, v = (k + 1/2) 2^-32. Element i of the n-th `randn` call of a generator uses counter
(n, 0, i, 0) and key (seed low 32 bits, seed high 32 bits) — the layout A1111's `rng_philox.py`
uses so that its tensors equal `torch.randn(shape, device="cuda")` after `torch.manual_seed(seed)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_TWO_POW32_INV = np.float32(2.3283064e-10)
_TWO_POW32_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Philox4x32-`rounds` of (4, n) uint32 counters under (2, n) uint32 keys; returns (4, n) uint32."""
    c0, c1, c2, c3 = (counter[i].astype(np.uint64) for i in range(4))
    k0, k1 = key[0].astype(np.uint64), key[1].astype(np.uint64)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    w0, w1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + w0) & _MASK32, (k1 + w1) & _MASK32
        p0, p1 = c0 * m0, c2 * m1
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & _MASK32,
        )
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """First output of cuRAND's Box–Muller transform of two uint32 arrays, as float32."""
    u = x * _TWO_POW32_INV.astype(np.float64) + float(_TWO_POW32_INV) / 2
    v = y * _TWO_POW32_INV_2PI.astype(np.float64) + float(_TWO_POW32_INV_2PI) / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A seeded stream of `randn` tensors equal to CUDA's for the same seed (A1111 "NV" source).

    >>> [round(float(v), 4) for v in PhiloxGenerator(0).randn((4,))]  # CUDA: torch.manual_seed(0)
    [-0.9247, -0.4253, -2.6438, 0.1452]
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        """The next standard-normal array of `shape` (float32)."""
        n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)
        self.offset += 1
        seed = np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)
        key = np.empty((2, n), dtype=np.uint32)
        key[0] = np.uint32(seed & _MASK32)
        key[1] = np.uint32(seed >> np.uint64(32))
        out = philox4x32(counter, key)
        return box_muller(out[0], out[1]).reshape(tuple(shape))

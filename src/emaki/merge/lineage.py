"""What is this model made of? Per-block least squares against candidate parents.

For every block b (the 25 UNet blocks, text encoder, VAE; `blocks.py`) it finds coefficients
c minimising `‖M_b - Σ_i c_i·X_i,b‖²` over all the block's weights, where M is the model and X_i
the candidates. Streaming: one slice of one tensor of every file at a time builds the Gram
matrix `G = [M X]ᵀ[M X]` (float64), and the normal equations give

    c = argmin ‖M - Xc‖ = (XᵀX)⁻¹ XᵀM,      relative residual = √(‖M‖² - 2cᵀXᵀM + cᵀXᵀXc) / ‖M‖

`nonnegative=True` solves with c ≥ 0 (Lawson-Hanson active set), which also picks the
candidates that take part: the others get exactly 0. A weighted sum `(1-α)A + αB` shows up as
(1-α, α); an add difference `A + α(B - C)` as (1, α, -α) (unconstrained only).

Components whose bits equal a candidate's (after casting the candidate to the model's dtype)
are reported as identical, e.g. a baked-in VAE.

A model made by baking a LoRA into a candidate X differs from X by a low-rank ΔW = M − X in
every layer the LoRA covers. A few layers (`LOW_RANK_SAMPLES`: attention, projections, MLPs
of the UNet and text encoder, spread over the file) are checked per candidate: a layer is
*changed* when ‖ΔW‖ > `UNCHANGED`·‖X‖ (more than rounding), and *low-rank* when 99 % of
‖ΔW‖² lies in its first r singular values with r ≤ `LOW_RANK_FRACTION` of the layer's smaller
side. When most changed layers are low-rank, the model "looks like X + a LoRA of rank ~R",
R the largest such r.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emaki.merge.blocks import (
    ALL_BLOCKS,
    TEXT_ENCODER,
    UNET_BLOCKS,
    VAE,
    block_of,
    is_merged_key,
)
from emaki.merge.recipe import MergeError
from emaki.merge.sources import TensorSource, open_source
from emaki.models.convert import EMA_PREFIX

LINEAGE_SLICE_ELEMENTS = 1 << 18
#: `nonnegative=True` leaves out a candidate unless it can lower the residual by at least this
#: fraction of ‖M‖ (fp16 rounding leaves a residual of about 3e-4·‖M‖, which bounds what a
#: candidate that is not a parent can explain).
SPARSE_THRESHOLD = 1e-3
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
LOW_RANK_SAMPLES = 8
LOW_RANK_ENERGY = 0.99
LOW_RANK_FRACTION = 0.25
#: ‖M − X‖ ≤ this · ‖X‖ in a layer: rounding (an fp16 copy is ~3e-4), not a change
UNCHANGED = 1e-3
_LORA_LAYER = re.compile(r"(attn[12]\.to_|proj_in|proj_out|ff\.net|self_attn\.|mlp\.fc)")


@dataclass
class LowRankDiff:
    """How a model differs from one candidate in the sampled layers (see the module doc)."""

    rank: int  # the largest rank holding 99 % of a low-rank layer's change
    low_rank: int  # sampled layers whose change is low-rank
    changed: int  # sampled layers that changed more than rounding
    sampled: int
    ranks: dict[str, int] = field(default_factory=dict)  # per changed layer: its 99 % rank

    @property
    def looks_like_lora(self) -> bool:
        return self.changed > 0 and 2 * self.low_rank > self.changed


@dataclass
class BlockFit:
    coefficients: dict[str, float]
    residual: float  # ‖M - Xc‖ / ‖M‖
    tensors: int = 0
    elements: int = 0


@dataclass
class LineageResult:
    model: str
    candidates: list[str]
    blocks: dict[str, BlockFit]
    #: block or component ("UNet", "TE", "VAE", "IN00", ...) → candidates it is bit-identical to
    identical: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # keys a candidate lacks or shapes differently
    nonnegative: bool = False
    #: candidate → how the model differs from it in a few sampled layers
    low_rank: dict[str, LowRankDiff] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "candidates": self.candidates,
            "method": "nonnegative least squares" if self.nonnegative else "least squares",
            "blocks": {
                name: {
                    "coefficients": fit.coefficients,
                    "residual": fit.residual,
                    "tensors": fit.tensors,
                    "elements": fit.elements,
                }
                for name, fit in self.blocks.items()
            },
            "identical": self.identical,
            "skipped": self.skipped,
            "low_rank": {
                path: {
                    "looks_like_lora": diff.looks_like_lora,
                    "rank": diff.rank,
                    "layers_low_rank": diff.low_rank,
                    "layers_changed": diff.changed,
                    "layers_sampled": diff.sampled,
                    "ranks": diff.ranks,
                }
                for path, diff in self.low_rank.items()
            },
        }

    def summary(self) -> list[str]:
        """Lines like `IN00–IN11: 0.70·nai + 0.30·wd13 (residual 0.2%)`."""
        labels = _short_labels(self.candidates)
        rows = []
        for name, fit in self.blocks.items():
            terms = [f"{c:.2f}·{labels[p]}" for p, c in fit.coefficients.items() if abs(c) >= 0.005]
            rows.append(
                (name, " + ".join(terms).replace("+ -", "- ") if terms else "0", fit.residual)
            )
        lines = []
        for group in _runs(rows):
            first, last = group[0][0], group[-1][0]
            span = first if first == last else f"{first}–{last}"
            lines.append(f"{span}: {group[0][1]} (residual {_percent(max(r[2] for r in group))})")
        for part in ("UNet", TEXT_ENCODER, VAE):
            for path in self.identical.get(part, []):
                lines.append(f"{_PART_NAMES[part]} identical to candidate {labels[path]}")
        for path, diff in self.low_rank.items():
            if diff.looks_like_lora:
                lines.append(
                    f"looks like {labels[path]} + a LoRA of rank ~{diff.rank} ({diff.low_rank} of "
                    f"{diff.changed} changed layers sampled hold {LOW_RANK_ENERGY:.0%} of the change "
                    f"in ≤ {diff.rank} singular values)"
                )
        if self.skipped:
            lines.append(
                f"{len(self.skipped)} tensors left out "
                "(missing or shaped differently in a candidate)"
            )
        return lines


_PART_NAMES = {"UNet": "UNet", TEXT_ENCODER: "text encoder", VAE: "VAE"}


def _percent(value: float) -> str:
    if value == 0:
        return "0%"
    if value < 1e-4:
        return "<0.01%"
    return f"{value * 100:.2g}%" if value < 0.1 else f"{value * 100:.1f}%"


def _runs(rows: list[tuple[str, str, float]]) -> list[list[tuple[str, str, float]]]:
    """Consecutive UNet blocks with the same formula, grouped; TE and VAE alone."""
    groups: list[list[tuple[str, str, float]]] = []
    for row in rows:
        if (
            groups
            and row[0] in UNET_BLOCKS
            and groups[-1][-1][0] in UNET_BLOCKS
            and groups[-1][-1][1] == row[1]
            and UNET_BLOCKS.index(row[0]) == UNET_BLOCKS.index(groups[-1][-1][0]) + 1
        ):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _short_labels(paths: list[str]) -> dict[str, str]:
    stems = [Path(p).stem for p in paths]
    return {p: (s if stems.count(s) == 1 else p) for p, s in zip(paths, stems, strict=True)}


def solve_least_squares(
    gram: torch.Tensor, *, nonnegative: bool = False
) -> tuple[torch.Tensor, float]:
    """Coefficients and relative residual from the Gram matrix of `[M, X_1 … X_k]` (float64)."""
    mm, h, g = gram[0, 0], gram[1:, 0], gram[1:, 1:]
    k = g.shape[0]
    scale = g.diagonal().clamp_min(0).sqrt()
    live = scale > 0
    coefficients = torch.zeros(k, dtype=torch.float64)
    if bool(live.any()):
        s = scale[live]
        g_scaled = g[live][:, live] / (s[:, None] * s[None, :])
        h_scaled = h[live] / s
        if nonnegative:
            solution = _nnls(
                g_scaled, h_scaled, enter=SPARSE_THRESHOLD * math.sqrt(max(float(mm), 0.0))
            )
        else:
            solution = torch.linalg.lstsq(
                g_scaled, h_scaled[:, None], rcond=1e-12, driver="gelsd"
            ).solution[:, 0]
        coefficients[live] = solution / s
    if float(mm) <= 0:
        return coefficients, 0.0
    r2 = float(mm - 2 * coefficients @ h + coefficients @ g @ coefficients)
    return coefficients, math.sqrt(max(r2, 0.0) / float(mm))


def _nnls(g: torch.Tensor, h: torch.Tensor, enter: float = 0.0, tol: float = 1e-12) -> torch.Tensor:
    """min ½cᵀGc - hᵀc subject to c ≥ 0 (Lawson & Hanson, 1974, on the normal equations).

    A candidate enters only if its gradient `w_j = x̂_jᵀ r` (x̂_j normalised) exceeds `enter`.
    """
    k = g.shape[0]
    c = torch.zeros(k, dtype=torch.float64)
    passive = torch.zeros(k, dtype=torch.bool)
    for _ in range(3 * k + 10):
        w = h - g @ c
        candidates = (~passive) & (w > max(tol, enter))
        if not bool(candidates.any()):
            break
        passive[
            int(torch.where(candidates, w, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
        ] = True
        for _ in range(3 * k + 10):
            s = torch.zeros(k, dtype=torch.float64)
            idx = passive.nonzero()[:, 0]
            s[idx] = torch.linalg.lstsq(g[idx][:, idx], h[idx][:, None], driver="gelsd").solution[
                :, 0
            ]
            if bool((s[idx] > tol).all()):
                c = s
                break
            bad = idx[s[idx] <= tol]
            step = float(torch.min(c[bad] / (c[bad] - s[bad]).clamp_min(1e-300)))
            c = c + step * (s - c)
            passive &= c > tol
            c[~passive] = 0
    return c


def _usable(key: str, source: TensorSource) -> bool:
    info = source.info(key)
    return (
        is_merged_key(key)
        and not key.startswith(EMA_PREFIX)
        and info.dtype.is_floating_point
        and block_of(key) in ALL_BLOCKS
    )


def trace_lineage(
    model: str | Path | TensorSource,
    candidates: Sequence[str | Path | TensorSource],
    *,
    nonnegative: bool = False,
    progress: Callable[[int, int], None] | None = None,
    slice_elements: int = LINEAGE_SLICE_ELEMENTS,
    threads: int | None = 1,
) -> LineageResult:
    """Express `model` block by block as a combination of `candidates` (see the module doc).

    `threads`: torch's intra-op threads while tracing, restored afterwards (None: leave it).
    One by default: the Gram products are skinny (k+1 rows) and memory-bound, and on a machine
    whose cores are busy with other work, multi-threaded BLAS on them spins and runs 10-40x
    slower (measured on 2 shared cores); one core keeps up with the reads.
    """
    if not candidates:
        raise MergeError("lineage: give at least one candidate model")
    opened: list[TensorSource] = []
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)

    def use(item: str | Path | TensorSource) -> TensorSource:
        if not isinstance(item, str | Path):
            return item  # the caller's to close
        source = open_source(item)
        opened.append(source)
        return source

    try:
        m = use(model)
        cands = [use(c) for c in candidates]
        return _trace(m, cands, nonnegative, progress, slice_elements)
    finally:
        for source in opened:
            source.close()
        if threads is not None:
            torch.set_num_threads(previous)


def _trace(
    model: TensorSource,
    cands: list[TensorSource],
    nonnegative: bool,
    progress: Callable[[int, int], None] | None,
    slice_elements: int,
) -> LineageResult:
    labels = [c.label for c in cands]
    if len(set(labels)) != len(labels):
        raise MergeError("lineage: the same candidate is given twice")
    k = len(cands)
    cand_keys = [set(c.keys()) for c in cands]
    keys = [key for key in model.keys() if _usable(key, model)]  # noqa: SIM118 (not a dict)
    if not keys:
        raise MergeError(f"{model.label}: no SD 1.x model weights to analyse")
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, list[int]] = {}
    same: dict[str, list[bool]] = {}
    skipped: list[str] = []
    total = sum(model.info(key).nbytes for key in keys)
    done = 0
    rows = torch.empty((k + 1, slice_elements), dtype=torch.float64)
    for key in keys:
        info = model.info(key)
        block = block_of(key)
        assert block is not None
        flags = same.setdefault(block, [True] * k)
        usable = True
        for j, cand in enumerate(cands):
            if key not in cand_keys[j] or cand.info(key).shape != info.shape:
                flags[j] = False
                usable = False
        if not usable:
            skipped.append(key)
            done += info.nbytes
            continue
        gram = grams.setdefault(block, torch.zeros((k + 1, k + 1), dtype=torch.float64))
        count = counts.setdefault(block, [0, 0])
        count[0] += 1
        count[1] += info.numel
        bits = _BITS[info.dtype.itemsize]
        for start in range(0, info.numel, slice_elements):
            n = min(slice_elements, info.numel - start)
            block_rows = rows[:, :n]
            raw = model.read(key, start, n)
            block_rows[0].copy_(raw)
            for j, cand in enumerate(cands):
                values = cand.read(key, start, n)
                block_rows[j + 1].copy_(values)
                if flags[j]:
                    flags[j] = torch.equal(values.to(info.dtype).view(bits), raw.view(bits))
            gram += block_rows @ block_rows.T
            done += n * info.dtype.itemsize
            if progress is not None:
                progress(done, total)
    paths = labels
    fits: dict[str, BlockFit] = {}
    for block in ALL_BLOCKS:
        if block not in grams:
            continue
        coefficients, residual = solve_least_squares(grams[block], nonnegative=nonnegative)
        fits[block] = BlockFit(
            {p: float(c) for p, c in zip(paths, coefficients.tolist(), strict=True)},
            residual,
            counts[block][0],
            counts[block][1],
        )
    identical: dict[str, list[str]] = {}
    for block in ALL_BLOCKS:
        if block in same:
            hits = [paths[j] for j in range(k) if same[block][j]]
            if hits:
                identical[block] = hits
    unet = [b for b in UNET_BLOCKS if b in same]
    if unet:
        hits = [paths[j] for j in range(k) if all(same[b][j] for b in unet)]
        if hits:
            identical["UNet"] = hits
    samples = _low_rank_samples(model, keys)
    low_rank = {}
    for j, cand in enumerate(cands):
        diff = low_rank_difference(model, cand, [key for key in samples if key in cand_keys[j]])
        if diff is not None:
            low_rank[paths[j]] = diff
    return LineageResult(model.label, paths, fits, identical, skipped, nonnegative, low_rank)


def _low_rank_samples(model: TensorSource, keys: list[str]) -> list[str]:
    """Up to `LOW_RANK_SAMPLES` layers LoRAs usually cover, evenly spread over the file."""
    layers = [
        key
        for key in keys
        if key.endswith(".weight")
        and _LORA_LAYER.search(key)
        and len(model.info(key).shape) in (2, 4)
        and model.info(key).shape[2:] in ((), (1, 1))
    ]
    if len(layers) <= LOW_RANK_SAMPLES:
        return layers
    step = len(layers) / LOW_RANK_SAMPLES
    return [layers[int((i + 0.5) * step)] for i in range(LOW_RANK_SAMPLES)]


def _whole(source: TensorSource, key: str) -> torch.Tensor:
    info = source.info(key)
    return source.read(key, 0, info.numel).to(torch.float32, copy=True).reshape(info.shape[0], -1)


def low_rank_difference(
    model: TensorSource, candidate: TensorSource, keys: Sequence[str]
) -> LowRankDiff | None:
    """How `model − candidate` looks in the layers `keys`; None if no layer was comparable."""
    diff = LowRankDiff(rank=0, low_rank=0, changed=0, sampled=0)
    for key in keys:
        if candidate.info(key).shape != model.info(key).shape:
            continue
        diff.sampled += 1
        x = _whole(candidate, key)
        delta = _whole(model, key) - x
        norm = float(delta.norm())
        if norm <= UNCHANGED * float(x.norm()):
            continue
        diff.changed += 1
        # The squared singular values, as eigenvalues of the smaller Gram matrix (a float32
        # product and a float64 eigensolve: far cheaper than an SVD of a 1280x5120 layer).
        side = delta if delta.shape[0] <= delta.shape[1] else delta.T
        energy = torch.linalg.eigvalsh((side @ side.T).double()).flip(0).clamp_min(0)
        share = energy.cumsum(0) / energy.sum()
        rank = int((share < LOW_RANK_ENERGY).sum()) + 1
        diff.ranks[key] = rank
        if rank <= LOW_RANK_FRACTION * min(delta.shape):
            diff.low_rank += 1
            diff.rank = max(diff.rank, rank)
    return diff if diff.sampled else None

"""The weight change ΔW of each LoRA/LyCORIS module type, with A1111 v1.10's arithmetic
(`extensions-builtin/Lora/network.py` and `network_*.py`).

Each type makes a raw update `u` from its tensors (OFT and IA³ also from the model's weight
W); then every type finishes the same way (`NetworkModule.delta`, A1111's `finalize_updown`):

    u ← u + bias                 (a `bias` part, rare)
    u ← u · s                    s = `scale`, else alpha / rank, else 1 (OFT: always 1)
    u ← DoRA(W, u)               with `dora_scale`: (W + u) · dora_scale / ‖W + u‖ − W
    ΔW = m · u,  Δb = m · ex_b   m: the tag's TE or UNet multiplier; ex_b: `diff_b`, `b_norm`

Everything is computed in float32 on the weight's device.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import ClassVar

import torch

from emaki.errors import ModelLoadError

Tensor = torch.Tensor


def _numel(shape: Collection[int]) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total


def _product_numel(a: Tensor, b: Tensor) -> int:
    """Elements of `a @ b.reshape(b.shape[0], -1)`, computed without computing it."""
    return int(a.shape[0]) * _numel(b.shape[1:])


def _tucker_numel(core: Tensor, a: Tensor, b: Tensor) -> int:
    return int(a.shape[-1]) * int(b.shape[-1]) * _numel(core.shape[2:])


def rebuild_tucker(core: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """CP/Tucker weight `core ×₀ a ×₁ b`: core [r, r', kh, kw], a [r, out], b [r', in] →
    [out, in, kh, kw] (LyCORIS `hada_t*`, `lokr_t2`)."""
    return torch.einsum("ijkl,jr,ip->prkl", core, b, a)


class NetworkModule:
    """One module of a LoRA file: its tensors by part (kohya spelling) and its formula."""

    kind: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    reads_weight: ClassVar[bool] = False  # its update uses the weight's values, not only its shape
    stores_update: ClassVar[bool] = False  # its update may be a stored tensor: never changed in place

    def __init__(self, parts: Mapping[str, Tensor]) -> None:
        self.parts = dict(parts)

    @classmethod
    def accepts(cls, names: Collection[str]) -> bool:
        return all(name in names for name in cls.required)

    def _get(self, name: str, like: Tensor) -> Tensor:
        return self.parts[name].to(device=like.device, dtype=torch.float32)

    def _has(self, name: str) -> bool:
        return name in self.parts

    @property
    def rank(self) -> int | None:
        """What alpha is divided by (A1111's `dim`); None when the type has none."""
        return None

    @property
    def scale(self) -> float:
        if self._has("scale"):
            return float(self.parts["scale"].item())
        if self._has("alpha") and self.rank:
            return float(self.parts["alpha"].item()) / self.rank
        return 1.0

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        """The raw update u (float32); `weight` is the model's: float32 when the type
        `reads_weight` (or has DoRA's `dora_scale`), else in the model's dtype, for its shape
        and device only."""
        raise NotImplementedError

    def implied_numel(self) -> int | None:
        """How many elements `update` would make, read from the parts' shapes alone; None when
        the update is no bigger than a stored part or the weight itself."""
        return None

    def bias_update(self, weight: Tensor) -> Tensor | None:
        """The raw bias update (A1111's `ex_bias`), if the type has one."""
        return None

    def delta(self, weight: Tensor, multiplier: float, dyn: int | None = None) -> tuple[Tensor, Tensor | None]:
        """(ΔW, Δb or None) for a model weight `weight`, in float32 (see the module docstring)."""
        implied = self.implied_numel()
        if implied is not None and implied > weight.numel():
            # A small file's factors can multiply out to gigabytes (a 240 KB file asked for 3.6 GB):
            # a real update never has more elements than the weight it changes.
            raise ValueError(f"its factors multiply out to {implied} values, more than the {weight.numel()} "
                             f"of the weight of shape {tuple(weight.shape)}")
        # A float32 copy of the weight only where its values are used (a bf16 model's weights
        # would be cast once per LoRA per layer): the other types read its shape and device.
        w = weight.detach().to(torch.float32) if self.reads_weight or self._has("dora_scale") else weight.detach()
        u = self.update(w, dyn)
        if self._has("bias"):
            u = (u.reshape(self.parts["bias"].shape) + self._get("bias", w)).reshape(u.shape)
        u = fit_to(u, w)
        if self._has("dora_scale"):
            u = weight_decompose(w, u * self.scale, self._get("dora_scale", w)) * multiplier
        else:
            # One pass over the weight-sized update; the result is always the caller's own tensor.
            factor = self.scale * multiplier
            u = u * factor if self.stores_update else u.mul_(factor)
        extra = self.bias_update(w)
        return u, (extra * multiplier if extra is not None else None)


def fit_to(update: Tensor, weight: Tensor) -> Tensor:
    """`update` reshaped to the weight's shape; a 4-input-channel update on a 9-channel conv
    (inpainting `conv_in`; 8 for instruct-pix2pix) is zero-padded on the extra channels (as A1111)."""
    if update.shape == weight.shape:
        return update
    if update.numel() == weight.numel():
        return update.reshape(weight.shape)
    if weight.ndim == 4 and update.numel() % (weight.shape[0] * weight.shape[2] * weight.shape[3]) == 0:
        conv = update.reshape(weight.shape[0], -1, *weight.shape[2:])
        if conv.shape[1] == 4 and weight.shape[1] in (8, 9):
            return torch.nn.functional.pad(conv, (0, 0, 0, 0, 0, weight.shape[1] - conv.shape[1]))
    raise ValueError(f"an update of shape {tuple(update.shape)} does not fit a weight of shape {tuple(weight.shape)}")


def weight_decompose(weight: Tensor, update: Tensor, magnitude: Tensor) -> Tensor:
    """DoRA: the update that gives `(W + u) · m / ‖W + u‖`, the norm taken per input channel
    (LyCORIS/A1111 `dora_scale` [1, in, ...]) or per output row (PEFT's magnitude [out])."""
    merged = weight + update
    rest = [1] * (weight.ndim - 1)
    if magnitude.shape[0] == weight.shape[0] and magnitude.numel() == weight.shape[0] and weight.shape[0] != 1:
        norm = merged.reshape(weight.shape[0], -1).norm(dim=1).reshape(-1, *rest)
        return merged * (magnitude.reshape(-1, *rest) / norm) - weight
    columns = merged.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
    shape = [1, weight.shape[1], *rest[1:]]
    return merged * (magnitude.reshape(shape) / columns.reshape(shape)) - weight


class LoraUpDown(NetworkModule):
    """LoRA / LoCon: u = up · down, [out, r] · [r, in·kh·kw]; with `lora_mid` (CP conv)
    u = mid ×₀ up ×₁ down. `dyn` keeps the first `dyn` ranks (DyLoRA), as A1111."""

    kind = "lora"
    required = ("lora_up.weight", "lora_down.weight")

    @property
    def rank(self) -> int:
        return int(self.parts["lora_down.weight"].shape[0])

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        up, down = self._get("lora_up.weight", weight), self._get("lora_down.weight", weight)
        up2, down2 = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
        if self._has("lora_mid.weight"):
            mid = self._get("lora_mid.weight", weight)
            return torch.einsum("nmkl,in,mj->ijkl", mid, up2, down2)
        if dyn is not None:
            up2, down2 = up2[:, :dyn], down2[:dyn]
        return (up2 @ down2).reshape(up.shape[0], down.shape[1], *down.shape[2:])

    def implied_numel(self) -> int:
        up, down = self.parts["lora_up.weight"], self.parts["lora_down.weight"]
        extra = _numel(self.parts["lora_mid.weight"].shape[2:]) if self._has("lora_mid.weight") else 1
        return _product_numel(up, down) * extra


class Hadamard(NetworkModule):
    """LoHa: u = (w1a · w1b) ⊙ (w2a · w2b); with `hada_t1/t2` each factor is t ×₀ a ×₁ b."""

    kind = "loha"
    required = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    @property
    def rank(self) -> int:
        return int(self.parts["hada_w1_b"].shape[0])

    def _factor(self, index: int, weight: Tensor) -> Tensor:
        a, b = self._get(f"hada_w{index}_a", weight), self._get(f"hada_w{index}_b", weight)
        if self._has(f"hada_t{index}"):
            return rebuild_tucker(self._get(f"hada_t{index}", weight), a, b)
        return a @ b.reshape(b.shape[0], -1)

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        first, second = self._factor(1, weight), self._factor(2, weight)
        return fit_to(first, weight) * fit_to(second, weight)

    def implied_numel(self) -> int:
        return max(_factor_numel(self.parts, "hada", index) for index in (1, 2))


class Kronecker(NetworkModule):
    """LoKr: u = w1 ⊗ w2, each `lokr_wN` or `lokr_wN_a · lokr_wN_b` (w2 also t2 ×₀ a ×₁ b);
    rank = the inner size of the factored one (none when both are full: scale 1)."""

    kind = "lokr"

    @classmethod
    def accepts(cls, names: Collection[str]) -> bool:
        return all(f"lokr_w{i}" in names or {f"lokr_w{i}_a", f"lokr_w{i}_b"} <= set(names) for i in (1, 2))

    @property
    def rank(self) -> int | None:
        if self._has("lokr_w2_b"):
            return int(self.parts["lokr_w2_b"].shape[0])
        if self._has("lokr_w1_b"):
            return int(self.parts["lokr_w1_b"].shape[0])
        return None

    def _factor(self, index: int, weight: Tensor) -> Tensor:
        if self._has(f"lokr_w{index}"):
            return self._get(f"lokr_w{index}", weight)
        a, b = self._get(f"lokr_w{index}_a", weight), self._get(f"lokr_w{index}_b", weight)
        if self._has(f"lokr_t{index}"):
            return rebuild_tucker(self._get(f"lokr_t{index}", weight), a, b)
        return a @ b.reshape(b.shape[0], -1)

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        w1, w2 = self._factor(1, weight), self._factor(2, weight)
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1.contiguous(), w2.contiguous())

    def implied_numel(self) -> int:
        return _factor_numel(self.parts, "lokr", 1) * _factor_numel(self.parts, "lokr", 2)


def _factor_numel(parts: Mapping[str, Tensor], prefix: str, index: int) -> int:
    """Elements of a LoHa/LoKr factor: stored whole, `a · b`, or Tucker `t ×₀ a ×₁ b`."""
    whole = f"{prefix}_w{index}"
    if whole in parts:
        return parts[whole].numel()
    a, b = parts[f"{prefix}_w{index}_a"], parts[f"{prefix}_w{index}_b"]
    core = parts.get(f"{prefix}_t{index}")
    return _tucker_numel(core, a, b) if core is not None else _product_numel(a, b)


class IA3(NetworkModule):
    """(IA)³: u = W ⊙ w, w scaling output rows, or input columns when `on_input`."""

    kind = "ia3"
    required = ("weight",)
    reads_weight = True

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        w = self._get("weight", weight)
        on_input = self._has("on_input") and bool(self.parts["on_input"].item())
        if on_input:
            return weight * w.reshape(1, -1, *[1] * (weight.ndim - 2))
        return weight * w.reshape(-1, *[1] * (weight.ndim - 1))


class FullDiff(NetworkModule):
    """Full fine-tune difference: u = diff, Δb = diff_b."""

    kind = "full"
    stores_update = True
    required = ("diff",)

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        return self._get("diff", weight)

    def bias_update(self, weight: Tensor) -> Tensor | None:
        return self._get("diff_b", weight) if self._has("diff_b") else None


class NormDiff(NetworkModule):
    """Norm layers (GroupNorm/LayerNorm): u = w_norm, Δb = b_norm."""

    kind = "norm"
    stores_update = True
    required = ("w_norm", "b_norm")

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        return self._get("w_norm", weight)

    def bias_update(self, weight: Tensor) -> Tensor | None:
        return self._get("b_norm", weight)


class Orthogonal(NetworkModule):
    """OFT: W' = blockdiag(R)ᵀ-rotated W, u = W' − W, per block k: W'ₖ = Rₖᵀ Wₖ (rows of W in
    blocks). `oft_blocks` (kohya, new LyCORIS): Q = B − Bᵀ, its norm clamped to alpha·out,
    R = (I + Q)(I − Q)⁻¹; `oft_diag` (old LyCORIS): R as stored. `rescale` scales W' rows.
    Scale is always 1 (A1111 sets it; alpha is the constraint here)."""

    kind = "oft"
    reads_weight = True

    @classmethod
    def accepts(cls, names: Collection[str]) -> bool:
        return "oft_blocks" in names or "oft_diag" in names

    @property
    def rank(self) -> int:
        blocks = self.parts["oft_blocks"] if self._has("oft_blocks") else self.parts["oft_diag"]
        return int(blocks.shape[0])

    @property
    def scale(self) -> float:
        return 1.0

    def rotation(self, weight: Tensor) -> Tensor:
        """The blocks Rₖ, [k, n, n]."""
        if not self._has("oft_blocks"):
            diag = self._get("oft_diag", weight)
            if diag.ndim != 3:
                raise ValueError(f"butterfly OFT (oft_diag of shape {tuple(diag.shape)}) is not supported")
            return diag
        blocks = self._get("oft_blocks", weight)
        q = blocks - blocks.transpose(1, 2)
        if self._has("alpha") and float(self.parts["alpha"].item()) > 0:
            constraint = float(self.parts["alpha"].item()) * weight.shape[0]
            norm = torch.linalg.vector_norm(q)
            q = q * ((torch.clamp(norm, max=constraint) + 1e-8) / (norm + 1e-8))
        eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
        return (eye + q) @ torch.linalg.inv(eye - q)

    def update(self, weight: Tensor, dyn: int | None = None) -> Tensor:
        r = self.rotation(weight)
        count, size = r.shape[0], r.shape[1]
        if count * size != weight.shape[0]:
            raise ValueError(f"{count} OFT blocks of {size} do not cover {weight.shape[0]} output rows")
        blocks = weight.reshape(count, size, -1)
        rotated = torch.einsum("knm,knx->kmx", r, blocks).reshape(weight.shape)
        if self._has("rescale"):
            rotated = rotated * self._get("rescale", weight).reshape(-1, *[1] * (weight.ndim - 1))
        return rotated - weight


MODULE_TYPES: tuple[type[NetworkModule], ...] = (LoraUpDown, Hadamard, IA3, Kronecker, FullDiff, NormDiff, Orthogonal)
"""In A1111's order of trying: the first type whose parts a module has is the one used."""


def module_type(names: Collection[str]) -> type[NetworkModule] | None:
    """The type of a module with these parts; None when none accepts them (GLoRA, BOFT...)."""
    for kind in MODULE_TYPES:
        if kind.accepts(names):
            return kind
    return None


def network_module(parts: Mapping[str, Tensor], where: str) -> NetworkModule:
    """The module for these parts; `where` names it in the error when no type fits."""
    kind = module_type(parts.keys())
    if kind is None:
        raise ModelLoadError(f"{where}: no LoRA module type accepts the parts {', '.join(sorted(parts))} "
                             "(emaki reads LoRA/LoCon, LoHa, LoKr, IA3, full, norm, OFT, DoRA)")
    return kind(parts)

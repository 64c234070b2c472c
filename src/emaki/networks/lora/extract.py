"""A LoRA from two checkpoints: the truncated SVD of TUNED − BASE, layer by layer (kohya's
`networks/extract_lora_from_models.py`), and the LoRA names of a checkpoint's LDM keys.

For each layer kohya's LoRA covers, with ΔW = W_tuned − W_base as a matrix [out, in·kh·kw]
(a 1x1 convolution is a linear layer; a 3x3 one is flattened and takes `conv_rank`):

    ΔW = U S Vᵀ,   up = U_r S_r  [out, r],   down = V_rᵀ  [r, in·kh·kw],   alpha = r (scale 1)

which is the best rank-r approximation in the Frobenius norm (Eckart-Young); the relative
error of a layer is ‖ΔW − up·down‖ / ‖ΔW‖, measured with the factors as stored. The layers
are kohya's (`networks/lora.py`): every Linear and Conv2d inside the UNet's transformers, the
text encoder's attention and MLP, and with a conv rank the ResNet blocks, down- and upsamplers.
Only the two tensors of one layer are in memory at a time.

Checkpoints are in the original single-file (LDM) layout; `CheckpointNames` maps every name a
LoRA file may give a module (kohya, LDM, PEFT: `targets.unet_names`/`text_encoder_names`) to
the checkpoint key it patches, from the checkpoint's keys alone (no model is built).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from emaki.errors import EmakiError, ModelLoadError
from emaki.files import atomic_write
from emaki.models.convert import CLIP_PREFIX, UNET_PREFIX
from emaki.networks.lora.targets import Component, text_encoder_names, unet_names

# --- names -----------------------------------------------------------------------------------

_FIXED_UNET = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_RESNET_PARTS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_DOWNSAMPLER = re.compile(r"^model\.diffusion_model\.input_blocks\.(\d+)\.0\.op\.weight$")
_INPUT_BLOCK = re.compile(r"^model\.diffusion_model\.input_blocks\.(\d+)\.")


def _resnet(prefix: str, rest: list[str]) -> str | None:
    tail = ".".join(rest)
    for ldm, diffusers in _RESNET_PARTS.items():
        if tail == ldm:
            return f"{prefix}.{diffusers}"
    return None


def unet_module_path(ldm: str, per_level: int) -> str | None:
    """The diffusers path of an LDM UNet module (after `model.diffusion_model.`), for a UNet
    with `per_level` ResNets per level; None for a path of no known form. The inverse of
    `emaki.models.convert.unet_to_ldm`'s renaming.

    >>> unet_module_path("input_blocks.4.1.transformer_blocks.0.attn1.to_q", 2)
    'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q'
    >>> unet_module_path("output_blocks.2.1.conv", 2), unet_module_path("middle_block.2.in_layers.2", 2)
    ('up_blocks.0.upsamplers.0.conv', 'mid_block.resnets.1.conv1')
    """
    if ldm in _FIXED_UNET:
        return _FIXED_UNET[ldm]
    parts = ldm.split(".")
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    kind, index, slot, rest = parts[0], int(parts[1]), parts[2], parts[3:]
    if kind == "middle_block":
        rest = parts[2:]
        if index == 1:
            return ".".join(["mid_block.attentions.0", *rest])
        return _resnet(f"mid_block.resnets.{index // 2}", rest) if index in (0, 2) else None
    if kind == "input_blocks" and index > 0:
        level, j = divmod(index - 1, per_level + 1)
        if j == per_level:
            return f"down_blocks.{level}.downsamplers.0.conv" if slot == "0" and rest == ["op"] else None
        if slot == "0":
            return _resnet(f"down_blocks.{level}.resnets.{j}", rest)
        return ".".join([f"down_blocks.{level}.attentions.{j}", *rest]) if slot == "1" and rest else None
    if kind == "output_blocks":
        level, j = divmod(index, per_level + 1)
        if slot == "0":
            return _resnet(f"up_blocks.{level}.resnets.{j}", rest)
        if rest == ["conv"] and slot in ("1", "2"):
            return f"up_blocks.{level}.upsamplers.0.conv"
        return ".".join([f"up_blocks.{level}.attentions.{j}", *rest]) if slot == "1" and rest else None
    return None


def resnets_per_level(keys: Iterable[str]) -> int:
    """ResNets per UNet level, from the LDM keys: the first downsampler sits at
    `input_blocks.{n + 1}`; without one (a single level), all the input blocks but the first."""
    downsamplers, inputs = [], []
    for key in keys:
        if m := _DOWNSAMPLER.match(key):
            downsamplers.append(int(m.group(1)))
        elif m := _INPUT_BLOCK.match(key):
            inputs.append(int(m.group(1)))
    if downsamplers:
        return min(downsamplers) - 1
    return max(inputs, default=1)


@dataclass(frozen=True)
class CheckpointModule:
    """One module of a single-file checkpoint that a LoRA can patch."""

    component: Component
    path: str  # the diffusers / transformers module path
    ldm: str  # the checkpoint key without `.weight`

    @property
    def weight_key(self) -> str:
        return self.ldm + ".weight"

    @property
    def bias_key(self) -> str:
        return self.ldm + ".bias"

    @property
    def kohya_name(self) -> str:
        """`lora_unet_<diffusers path>` / `lora_te_text_model_<path>`, `.` as `_`."""
        names = (unet_names(self.path, None) if self.component == "unet"
                 else text_encoder_names(self.path))
        return names[0]


class CheckpointNames:
    """Every LoRA spelling of every weight of a checkpoint (by its LDM keys) → the module."""

    def __init__(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        per_level = resnets_per_level(keys)
        self.modules: list[CheckpointModule] = []
        self._by_name: dict[str, CheckpointModule] = {}
        unet: list[tuple[list[str], CheckpointModule]] = []
        for key in keys:
            if not key.endswith(".weight"):
                continue
            ldm = key.removesuffix(".weight")
            if key.startswith(CLIP_PREFIX):
                path = ldm[len(CLIP_PREFIX):].removeprefix("text_model.")
                module = CheckpointModule("text_encoder", path, ldm)
                self._add(text_encoder_names(path), module)  # the text encoder's names first
            elif key.startswith(UNET_PREFIX):
                inner = ldm[len(UNET_PREFIX):]
                found = unet_module_path(inner, per_level)
                if found is None:
                    continue
                module = CheckpointModule("unet", found, ldm)
                unet.append((unet_names(found, inner), module))
            else:
                continue
            self.modules.append(module)
        for names, module in unet:
            self._add(names, module)

    def _add(self, names: list[str], module: CheckpointModule) -> None:
        for name in names:
            self._by_name.setdefault(name, module)

    def find(self, name: str) -> CheckpointModule | None:
        """The module a LoRA file's module name patches, or None."""
        return self._by_name.get(name)


_TRANSFORMER = re.compile(r"(^|\.)attentions\.\d+\.")
_CONV_MODULE = re.compile(r"\.resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)$|(down|up)samplers\.0\.conv$")
_TEXT_MODULE = re.compile(r"\.(self_attn|mlp)\.")


def kohya_modules(names: CheckpointNames, shapes: Mapping[str, tuple[int, ...]], *,
                  convolutions: bool) -> list[CheckpointModule]:
    """The modules kohya's LoRA (`networks/lora.py`) covers, in checkpoint order: Linear and
    Conv2d layers inside the UNet's transformers and the text encoder's attention and MLP; with
    `convolutions` (LoCon, kohya's `conv_dim`) those of the ResNet blocks and resamplers too."""
    chosen = []
    for module in names.modules:
        shape = shapes.get(module.weight_key)
        if shape is None or len(shape) not in (2, 4):
            continue
        if module.component == "text_encoder":
            if _TEXT_MODULE.search(module.path) and len(shape) == 2:
                chosen.append(module)
        elif _TRANSFORMER.search(module.path) or (convolutions and _CONV_MODULE.search(module.path)):
            chosen.append(module)
    return chosen


# --- extraction ------------------------------------------------------------------------------

class _Shaped(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...


class WeightSource(Protocol):
    """What extraction reads: a checkpoint opened for streaming (`emaki.merge.open_source`)."""

    @property
    def label(self) -> str: ...

    def keys(self) -> list[str]: ...
    def info(self, key: str) -> _Shaped: ...
    def read(self, key: str, start: int, count: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class LayerFit:
    """One extracted layer: its LoRA name, checkpoint key, rank, ‖ΔW‖² and ‖ΔW − up·down‖²."""

    name: str
    key: str
    component: Component
    rank: int
    energy: float
    residual: float

    @property
    def relative_error(self) -> float:
        return math.sqrt(self.residual / self.energy) if self.energy > 0 else 0.0


@dataclass
class ExtractedLora:
    """The extracted LoRA: kohya-format tensors and metadata, and how well each layer fits."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    layers: list[LayerFit]
    unchanged: list[str] = field(default_factory=list)  # layers with ΔW = 0 (or a TE left out)
    text_encoder_dropped: bool = False

    def relative_errors(self, group: Callable[[str], str | None]) -> dict[str, float]:
        """√(Σ‖ΔW − ΔW_r‖² / Σ‖ΔW‖²) over the layers of each group (`group(key)`, e.g. a merge
        block), in the order the groups first occur."""
        sums: dict[str, list[float]] = {}
        for layer in self.layers:
            name = group(layer.key)
            if name is None:
                continue
            total = sums.setdefault(name, [0.0, 0.0])
            total[0] += layer.energy
            total[1] += layer.residual
        return {name: math.sqrt(r / e) if e > 0 else 0.0 for name, (e, r) in sums.items()}

    @property
    def relative_error(self) -> float:
        energy = sum(layer.energy for layer in self.layers)
        return math.sqrt(sum(layer.residual for layer in self.layers) / energy) if energy > 0 else 0.0


#: kohya's `--min_diff`: a text encoder whose weights differ by no more than this everywhere is
#: the base's (only rounding apart) and is left out of the LoRA.
MIN_TEXT_ENCODER_DIFF = 0.01
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


#: Elements read (and subtracted) at a time, and rows per step of the residual.
_READ_ELEMENTS = 1 << 20
_RESIDUAL_ROWS = 64


def _difference(tuned: WeightSource, base: WeightSource, key: str, device: torch.device) -> torch.Tensor:
    """`tuned[key] − base[key]` in float32 on `device`; the base is subtracted slice by slice,
    so only one whole tensor is held."""
    shape = tuple(tuned.info(key).shape)
    count = math.prod(shape)
    delta = tuned.read(key, 0, count).to(device=device, dtype=torch.float32, copy=True)
    for start in range(0, count, _READ_ELEMENTS):
        n = min(_READ_ELEMENTS, count - start)
        delta[start : start + n] -= base.read(key, start, n).to(device=device, dtype=torch.float32)
    return delta.reshape(shape)


def low_rank_factors(delta: torch.Tensor, rank: int, clamp_quantile: float | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [out, r], down [r, cols]) with up·down the best rank-r approximation of the matrix
    `delta` [out, cols]: up = U_r·S_r, down = V_rᵀ (kohya's split).

    U_r (or V_r, whichever side is smaller) are the top eigenvectors of the Gram matrix
    ΔW·ΔWᵀ (or ΔWᵀ·ΔW): the same factors as a full SVD, for a float32 product and a small
    float64 eigensolve (a 1280x11520 layer: ~1 s instead of ~6 s for `torch.linalg.svd` on one
    core). `clamp_quantile` clips both to ±that quantile of their values (kohya's default 0.99;
    off here)."""
    if delta.shape[0] <= delta.shape[1]:
        _, vectors = torch.linalg.eigh((delta @ delta.T).double())
        u = vectors[:, -rank:].flip(1).to(delta.dtype)  # top r, largest first
        scaled = u.T @ delta  # S_r·V_rᵀ
        s = scaled.norm(dim=1)
        up, down = u * s, scaled / s.clamp_min(torch.finfo(delta.dtype).tiny)[:, None]
    else:
        _, vectors = torch.linalg.eigh((delta.T @ delta).double())
        down = vectors[:, -rank:].flip(1).to(delta.dtype).T.contiguous()  # V_rᵀ
        up = delta @ down.T  # U_r·S_r
    if clamp_quantile is not None and clamp_quantile < 1:
        values = torch.cat([up.reshape(-1), down.reshape(-1)])
        k = min(values.numel(), max(1, math.ceil(clamp_quantile * values.numel())))
        limit = float(values.kthvalue(k).values)
        up, down = up.clamp(-limit, limit), down.clamp(-limit, limit)
    return up, down


def extract_lora(tuned: WeightSource, base: WeightSource, *, rank: int, conv_rank: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16,
                 min_text_encoder_diff: float = MIN_TEXT_ENCODER_DIFF, clamp_quantile: float | None = None,
                 name: str | None = None, threads: int | None = 1,
                 progress: Callable[[int, int, str], None] | None = None) -> ExtractedLora:
    """The rank-`rank` LoRA (3x3 convolutions: `conv_rank`, default `rank`; 0 leaves the ResNet
    blocks out, as kohya without `--conv_dim`) closest to `tuned − base`, layer by layer (see the
    module docstring). `progress(done, total, key)` after each layer.

    `threads`: torch's intra-op threads meanwhile, restored after (None: leave them). One by
    default: on cores other work keeps busy, torch's spinning threads made a small SVD 20x
    slower than one thread (measured on 2 shared cores)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _extract(tuned, base, rank, conv_rank, device, dtype, min_text_encoder_diff,
                        clamp_quantile, name, progress)
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def _extract(tuned: WeightSource, base: WeightSource, rank: int, conv_rank: int | None,
             device: str | torch.device, dtype: torch.dtype, min_text_encoder_diff: float,
             clamp_quantile: float | None, name: str | None,
             progress: Callable[[int, int, str], None] | None) -> ExtractedLora:
    if rank < 1:
        raise EmakiError(f"lora extract: --rank must be 1 or more, got {rank}")
    conv = rank if conv_rank is None else conv_rank
    if conv < 0:
        raise EmakiError(f"lora extract: --conv-rank must be 0 or more, got {conv}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmakiError(f"lora extract: --device {device}: no CUDA device here (use --device cpu)")
    tuned_keys, base_keys = tuned.keys(), set(base.keys())
    names = CheckpointNames(tuned_keys)
    shapes = {key: tuple(tuned.info(key).shape) for key in tuned_keys}
    modules = kohya_modules(names, shapes, convolutions=conv > 0)
    if not modules:
        raise ModelLoadError(f"{tuned.label}: no SD 1.x UNet or text-encoder layers to extract")
    modules.sort(key=lambda m: m.component != "text_encoder")  # the text encoder first (min diff)
    result = ExtractedLora({}, {}, [])
    text_diff = 0.0
    with torch.no_grad():
        for done, module in enumerate(modules, start=1):
            key = module.weight_key
            if key not in base_keys or tuple(base.info(key).shape) != shapes[key]:
                raise ModelLoadError(
                    f"{base.label}: {key!r} is missing or shaped differently from {tuned.label}'s "
                    f"{list(shapes[key])} (not the same architecture)")
            delta = _difference(tuned, base, key, dev)
            if module.component == "text_encoder":
                text_diff = max(text_diff, float(delta.abs().max()))
            fit = _fit_layer(module, delta, rank, conv, dtype, clamp_quantile, result)
            if fit is None:
                result.unchanged.append(key)
            else:
                result.layers.append(fit)
            del delta
            if progress is not None:
                progress(done, len(modules), key)
    if text_diff <= min_text_encoder_diff:
        dropped = [fit for fit in result.layers if fit.component == "text_encoder"]
        if dropped:
            result.text_encoder_dropped = True
        for fit in dropped:
            for part in ("lora_up.weight", "lora_down.weight", "alpha"):
                del result.tensors[f"{fit.name}.{part}"]
            result.unchanged.append(fit.key)
        result.layers = [fit for fit in result.layers if fit.component != "text_encoder"]
    result.metadata = kohya_metadata(rank, conv, name)
    return result


def _fit_layer(module: CheckpointModule, delta: torch.Tensor, rank: int, conv_rank: int,
               dtype: torch.dtype, clamp_quantile: float | None, into: ExtractedLora) -> LayerFit | None:
    if not bool(delta.any()):
        return None
    shape = tuple(delta.shape)
    out_dim, in_dim = shape[0], shape[1]
    kernel = shape[2:]
    wanted = conv_rank if kernel and kernel != (1, 1) else rank
    r = min(wanted, out_dim, in_dim)
    matrix = delta.reshape(out_dim, -1)
    up, down = low_rank_factors(matrix, r, clamp_quantile)
    up, down = up.to(dtype), down.to(dtype)
    stored_up, stored_down = up.float(), down.float()
    energy = residual = 0.0  # ‖ΔW‖² and ‖ΔW − up·down‖² (as stored), a few rows at a time
    for first in range(0, out_dim, _RESIDUAL_ROWS):
        rows = slice(first, first + _RESIDUAL_ROWS)
        energy += float(matrix[rows].double().pow(2).sum())
        residual += float((matrix[rows] - stored_up[rows] @ stored_down).double().pow(2).sum())
    if kernel:
        up_stored, down_stored = up.reshape(out_dim, r, 1, 1), down.reshape(r, in_dim, *kernel)
    else:
        up_stored, down_stored = up, down
    name = module.kohya_name
    into.tensors[f"{name}.lora_up.weight"] = up_stored.contiguous().cpu()
    into.tensors[f"{name}.lora_down.weight"] = down_stored.contiguous().cpu()
    into.tensors[f"{name}.alpha"] = torch.tensor(float(r), dtype=dtype)
    return LayerFit(name, module.weight_key, module.component, r, energy, residual)


def kohya_metadata(rank: int, conv_rank: int, name: str | None) -> dict[str, str]:
    """The `ss_*` metadata kohya's extractor writes (alpha = dim: scale 1)."""
    args = {"conv_dim": str(conv_rank), "conv_alpha": str(float(conv_rank))} if conv_rank else {}
    metadata = {
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(rank)),
        "ss_network_args": json.dumps(args),
    }
    if name:
        metadata["ss_output_name"] = name
    return metadata


def safetensors_hashes(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """kohya's `sshs_model_hash` and `sshs_legacy_hash` of a LoRA about to be saved: the sha256
    of the tensor data (the addnet hash A1111's `Lora hashes` shows), and the 8-hex legacy hash
    of the file written with its `ss_*` metadata only."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    start = 8 + int.from_bytes(data[:8], "little")
    return (hashlib.sha256(data[start:]).hexdigest(),
            hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8])


def save_extracted_lora(lora: ExtractedLora, path: str | Path, *, overwrite: bool = False) -> str:
    """Write `lora` as a kohya `.safetensors` with its hashes in the metadata; the model hash."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise EmakiError(f"{path}: emaki writes LoRAs as .safetensors; choose a name ending in .safetensors")
    if path.exists() and not overwrite:
        raise EmakiError(f"{path}: already exists (pass --overwrite to replace it)")
    if not lora.tensors:
        raise EmakiError(f"{path}: nothing to write: the two models do not differ in any LoRA layer")
    model_hash, legacy = safetensors_hashes(lora.tensors, lora.metadata)
    metadata = {**lora.metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy}
    with atomic_write(path) as tmp:
        save_file(lora.tensors, str(tmp), metadata=metadata)
    return model_hash

"""Training a LoRA (kohya's `networks.lora`, LoCon with `conv_dim`) and writing it as kohya does.

Which layers get a LoRA follows kohya's sd-scripts: in the UNet every Linear and 1x1 convolution
inside a `Transformer2DModel` (with `conv_dim`, also the layers of `ResnetBlock2D`, `Downsample2D`
and `Upsample2D`, their 3x3 convolutions at `conv_dim`); in the text encoder every Linear of the
attention and MLP blocks. Each gets `down` (kaiming-uniform) and `up` (zeros, so a new LoRA
changes nothing), and adds `up(down(x)) · alpha/rank` to the layer's output through a forward
hook — the weights themselves are never touched, so the cached model is intact when the hooks go.

The file: `lora_unet_<path>` / `lora_te_<path>` (`.` → `_`) `.lora_down.weight`,
`.lora_up.weight`, `.alpha`, with the `ss_*` metadata A1111, ComfyUI and Civitai read and
`sshs_model_hash` (sha256 of the tensor data).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save, save_file
from torch import nn

from emaki.errors import ModelLoadError, ParamsError
from emaki.files import atomic_write
from emaki.models.loader import LoadedModel
from emaki.prompts import PromptEncoder
from emaki.training.artifacts import write_optim
from emaki.training.dataset import TrainingImage
from emaki.training.loop import all_finite
from emaki.training.params import TrainingParams
from emaki.training.schedules import parse_lr_schedule

UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")


class LoraLayer(nn.Module):
    """`up(down(x)) · scale` beside one Linear or Conv2d."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.down: nn.Linear | nn.Conv2d
        self.up: nn.Linear | nn.Conv2d
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size,  # type: ignore[arg-type]
                                  base.stride, base.padding, bias=False)  # type: ignore[arg-type]
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"no LoRA for {type(base).__name__}")
        self.rank, self.alpha = rank, alpha
        with torch.no_grad():
            bound = 1 / math.sqrt(self.down.weight[0].numel())  # kaiming_uniform(a=√5), from `generator`
            self.down.weight.uniform_(-bound, bound, generator=generator)
            self.up.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.float())) * (self.alpha / self.rank)


def _hook(layer: LoraLayer) -> Any:
    def add(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return output + layer(inputs[0]).to(output.dtype)

    return add


def lora_targets(root: nn.Module, blocks: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """`(path, module)` of every Linear/Conv2d inside a module whose class is in `blocks`."""
    wanted, found = set(blocks), dict[str, nn.Module]()
    for path, module in root.named_modules():
        if type(module).__name__ not in wanted:
            continue
        for child_path, child in module.named_modules():
            if isinstance(child, nn.Linear | nn.Conv2d) and child_path:
                found.setdefault(f"{path}.{child_path}", child)
    return list(found.items())


def kohya_name(component: str, path: str) -> str:
    """`lora_unet_down_blocks_0_...` / `lora_te_text_model_encoder_layers_0_self_attn_q_proj`."""
    if component == "te" and not path.startswith("text_model."):
        path = "text_model." + path  # transformers 5 names the modules without the wrapper
    return f"lora_{component}_{path.replace('.', '_')}"


@dataclass
class LoraTrainee:
    """A LoRA on one loaded model, hooked in for the run (see the module docstring)."""

    name: str
    model: LoadedModel
    encoder: PromptEncoder
    rank: int
    alpha: float
    conv_rank: int | None
    conv_alpha: float
    unet_lr: float
    te_lr: float
    optimizer_name: str = "AdamW"
    seed: int = 0
    step: int = 0
    metadata: dict[str, str] = field(default_factory=dict)  # the training options, written as ss_*
    layers: dict[str, LoraLayer] = field(default_factory=dict)
    _components: dict[str, str] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _contexts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = self.model.components
        generator = torch.Generator().manual_seed(self.seed)
        unet_blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if self.conv_rank else ())
        chosen = [("unet", path, module) for path, module in lora_targets(parts.unet, unet_blocks)]
        if self.te_lr > 0:
            chosen += [("te", path, module) for path, module in lora_targets(parts.text_encoder, TEXT_BLOCKS)]
        for component, path, module in chosen:
            is_3x3 = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
            if is_3x3 and not self.conv_rank:
                continue
            rank, alpha = (self.conv_rank, self.conv_alpha) if is_3x3 and self.conv_rank else (self.rank, self.alpha)
            layer = LoraLayer(module, rank, alpha, generator).to(next(module.parameters()).device)
            name = kohya_name(component, path)
            self.layers[name] = layer
            self._components[name] = component
            self._handles.append(module.register_forward_hook(_hook(layer)))

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for name in sorted(self.layers) for p in self.layers[name].parameters()]

    def _group(self, component: str) -> list[torch.Tensor]:
        return [p for name in sorted(self.layers) if self._components[name] == component
                for p in self.layers[name].parameters()]

    def optimizer(self, learn_rate: float) -> torch.optim.Optimizer:
        cls = getattr(torch.optim, self.optimizer_name, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            choices = sorted(n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer")
            raise ParamsError(f"optimizer: {self.optimizer_name!r} is not a torch optimizer; expected one of "
                              f"{', '.join(choices)}")
        groups = [{"params": self._group("unet"), "lr": self.unet_lr}]
        if self.te_lr > 0:
            groups.append({"params": self._group("te"), "lr": self.te_lr})
        return cls(groups, lr=self.unet_lr)  # type: ignore[call-arg]  # every torch optimizer takes lr

    def context(self, texts: list[str]) -> torch.Tensor:
        if self.te_lr > 0:
            return self.encoder.encode(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._contexts]  # a frozen text encoder:
        if missing:  # each caption is encoded once
            with torch.no_grad():
                self._contexts.update(zip(missing, self.encoder.encode(missing), strict=True))
        return torch.stack([self._contexts[t] for t in texts])

    def preview_embeddings(self, scan: Any) -> Any:
        return scan

    def train_mode(self, training: bool) -> None:
        for layer in self.layers.values():
            layer.train(training)

    def state(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in sorted(self.layers.items()):
            tensors[f"{name}.lora_down.weight"] = layer.down.weight.detach().float().cpu().contiguous()
            tensors[f"{name}.lora_up.weight"] = layer.up.weight.detach().float().cpu().contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(float(layer.alpha))
        return tensors

    def load(self, path: Path) -> None:
        """Go on from a LoRA file this trainee's layout wrote (its step from `ss_steps`)."""
        from safetensors import safe_open

        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        missing = [name for name in self.layers if f"{name}.lora_down.weight" not in tensors]
        if missing:
            raise ModelLoadError(f"{path}: has no LoRA for {len(missing)} of this run's layers (e.g. {missing[0]}); "
                                 "was it trained with other --rank/--conv-rank/--te-lr settings?")
        with torch.no_grad():
            for name, layer in self.layers.items():
                for part, module in (("lora_down", layer.down), ("lora_up", layer.up)):
                    value = tensors[f"{name}.{part}.weight"]
                    if value.shape != module.weight.shape:
                        raise ModelLoadError(f"{path}: {name}.{part} has shape {tuple(value.shape)}, this run's "
                                             f"{tuple(module.weight.shape)} (another --rank?)")
                    module.weight.copy_(value)
        self.step = int(meta.get("ss_steps", "0") or 0)

    def save(self, path: Path, step: int, optimizer: torch.optim.Optimizer | None, record: dict[str, Any]) -> Path:
        tensors = self.state()
        if not all_finite(tensors.values()):
            raise ModelLoadError(f"{path}: not written, the LoRA's weights are not finite")
        data_hash = hashlib.sha256(_tensor_bytes(tensors)).hexdigest()
        meta = {**self.metadata, "ss_output_name": path.stem, "ss_steps": str(step),
                "sshs_model_hash": data_hash, "emaki_provenance": json.dumps(record, sort_keys=True)}
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        if optimizer is not None:
            write_optim(path, optimizer.state_dict(), data_hash[:10], self.optimizer_name)
        return path

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The tensor data of the safetensors file (what `sshs_model_hash` hashes: header excluded)."""
    blob = save(tensors)
    header = int.from_bytes(blob[:8], "little")
    return blob[8 + header:]


def tag_frequency(folder: str, captions: Iterable[str]) -> str:
    """kohya's `ss_tag_frequency`: `{"<folder>": {tag: count}}` as JSON (Civitai shows it)."""
    counts = Counter(tag.strip() for caption in captions for tag in caption.split(",") if tag.strip())
    return json.dumps({folder: dict(counts.most_common())})


def safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def lora_trainee(params: TrainingParams, model: LoadedModel, encoder: PromptEncoder,
                  images: list[TrainingImage]) -> LoraTrainee:
    base = parse_lr_schedule(params.resolved_learn_rate).base_lr
    unet_lr = params.unet_lr if params.unet_lr is not None else base
    te_lr = params.text_encoder_lr if params.text_encoder_lr is not None else base
    alpha = params.network_alpha or float(params.network_dim)
    conv_alpha = params.conv_alpha or float(params.conv_dim or 1)
    size = images[0].pixels.shape[-1], images[0].pixels.shape[-2]
    metadata = {
        "ss_network_module": "networks.lora", "ss_network_dim": str(params.network_dim),
        "ss_network_alpha": f"{alpha:g}", "ss_base_model_version": "sd_v1", "ss_v2": "False",
        "ss_network_args": json.dumps({"conv_dim": str(params.conv_dim), "conv_alpha": f"{conv_alpha:g}"})
        if params.conv_dim else "null",
        "ss_sd_model_name": model.name, "ss_sd_model_hash": model.hash or "", "ss_clip_skip": str(params.clip_skip),
        "ss_tag_frequency": tag_frequency(Path(params.data).name, (image.filewords for image in images)),
        "ss_num_train_images": str(sum(image.repeats for image in images)),
        "ss_max_train_steps": str(params.steps),
        "ss_learning_rate": f"{base:g}", "ss_unet_lr": f"{unet_lr:g}", "ss_text_encoder_lr": f"{te_lr:g}",
        "ss_optimizer": f"torch.optim.{params.optimizer}", "ss_lr_scheduler": params.resolved_lr_scheduler,
        "ss_lr_warmup_steps": str(params.lr_warmup_steps), "ss_min_snr_gamma": str(params.min_snr_gamma),
        "ss_noise_offset": f"{params.noise_offset:g}", "ss_caption_dropout_rate": f"{params.caption_dropout_rate:g}",
        "ss_keep_tokens": str(params.keep_tokens), "ss_shuffle_caption": str(params.shuffle_tags),
        "ss_resolution": f"({size[0]}, {size[1]})", "ss_batch_size_per_device": str(params.batch_size),
        "ss_gradient_accumulation_steps": str(params.gradient_step), "ss_seed": str(params.seed),
        "ss_training_comment": "trained by emaki",
        "ss_enable_bucket": str(params.buckets is not None),
    }
    if params.buckets is not None:  # kohya's bucket options, as its files record them
        low, high, step = params.buckets
        metadata |= {"ss_min_bucket_reso": str(low), "ss_max_bucket_reso": str(high),
                     "ss_bucket_reso_steps": str(step), "ss_bucket_no_upscale": "False"}
    return LoraTrainee(params.name, model, encoder, params.network_dim, alpha, params.conv_dim, conv_alpha,
                       unet_lr, te_lr, params.optimizer, params.seed, metadata=metadata)

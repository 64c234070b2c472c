"""Load an SD 1.x model from whatever the user has: a single file, a diffusers folder, a hub id.

Everything is offline: configs are inferred from the file or shipped in the package, and the
tokenizer files ship in the package. Models are built without random initialisation (empty
weights, then the checkpoint's tensors assigned), so a full SD 1.5 file loads in seconds.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import init_empty_weights
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from emaki.errors import ModelLoadError
from emaki.models.checkpoint import normalize_state_dict, read_checkpoint
from emaki.models.components import SDComponents
from emaki.models.configs import SD1_SCHEDULE, ModelConfig
from emaki.models.convert import (
    EMA_PREFIX,
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ldm_to_text_encoder,
    ldm_to_unet,
    ldm_to_vae,
)
from emaki.models.hashes import HashCache
from emaki.models.regular_files import regular_file_stat
from emaki.models.safe_load import load_tensors
from emaki.models.tokenizer import load_clip_tokenizer


@dataclass
class LoadedModel:
    """A model ready to run, with what the infotext says about it."""

    components: SDComponents
    name: str
    source: str
    hash: str | None
    vae_name: str | None = None
    vae_hash: str | None = None


_Module = TypeVar("_Module", bound=torch.nn.Module)


def _assign(module_cls: type[_Module], config: dict[str, Any], state: dict[str, torch.Tensor], what: str,
            source: str, dtype: torch.dtype = torch.float32) -> _Module:
    try:
        with init_empty_weights(include_buffers=False):
            if module_cls is CLIPTextModel:
                module = module_cls(CLIPTextConfig(**config))
            else:
                module = module_cls(**config)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as e:
        # Sizes SD 1.x conventions fill in (e.g. 32 norm groups) may not fit a small model's tensors.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{source}: the {what} sizes read from the tensors do not build a model ({first}); "
                             "a checkpoint that needs other sizes must carry them (emaki's .safetensors do)") from None
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelLoadError(f"{source}: the {what} weights do not fit an SD 1.x {what} ({detail})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelLoadError(
                f"{source}: {what} tensor {key!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, assign=True, strict=True)
    return module.eval().requires_grad_(False)


def components_from_ldm(state: dict[str, torch.Tensor], config: ModelConfig, source: str,
                        dtype: torch.dtype = torch.float32) -> SDComponents:
    """Build the three modules from a normalised LDM state dict.

    UNet and VAE weights get `dtype`; the text encoder stays float32 (it is cheap, and the
    emphasis mean-restore is sensitive to rounding).
    """
    unet = _assign(UNet2DConditionModel, config.unet, ldm_to_unet(state, config.unet), "UNet", source, dtype)
    vae = _assign(AutoencoderKL, config.vae, ldm_to_vae(state, config.vae), "VAE", source, dtype)
    text = _assign(CLIPTextModel, config.text_encoder, ldm_to_text_encoder(state), "text encoder", source)
    alphas = state.get("alphas_cumprod")
    components = SDComponents(unet, vae, text, load_clip_tokenizer(), config)
    if alphas is not None and alphas.numel() == config.schedule["num_train_timesteps"]:
        components.alphas_cumprod = alphas.to(torch.float64)
    return components


def load_single_file(path: Path, dtype: torch.dtype = torch.float32) -> SDComponents:
    """UNet and VAE weights come in `dtype`, the text encoder's in float32 (`components_from_ldm`),
    each cast as it is read: a 2.1 GB fp16 file loads at fp32 in its fp32 size plus one tensor."""

    def dtype_of(key: str) -> torch.dtype | None:
        if key.startswith(TEXT_ENCODER_PREFIX):
            return torch.float32
        return dtype if key.startswith((UNET_PREFIX, VAE_PREFIX)) else None  # others (the schedule) as stored

    state, config = read_checkpoint(path, dtype_of)
    return components_from_ldm(state, config, str(path), dtype)


def load_diffusers(source: str, dtype: torch.dtype = torch.float32) -> SDComponents:
    """A diffusers folder (`model_index.json`) or a hub id, through diffusers' own loading."""
    local = Path(source).is_dir()
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae")
        text = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
    except (OSError, ValueError) as e:
        where = "folder" if local else "hub id (no network access, or not a diffusers SD 1.x repo)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{source}: cannot load diffusers {where}: {first}") from None
    config = ModelConfig(
        unet={k: v for k, v in unet.config.items() if not k.startswith("_")},
        vae={k: v for k, v in vae.config.items() if not k.startswith("_")},
        text_encoder=text.config.to_dict(),
        schedule=dict(SD1_SCHEDULE),
    )
    modules: tuple[tuple[torch.nn.Module, torch.dtype], ...] = (
        (unet, dtype), (vae, dtype), (text, torch.float32)
    )
    for module, module_dtype in modules:
        module.to(module_dtype).eval().requires_grad_(False)
    return SDComponents(unet, vae, text, load_clip_tokenizer(), config)


def read_vae_state(path: Path) -> dict[str, torch.Tensor]:
    """A standalone VAE (`*.vae.pt` / `.safetensors`, keys without prefix) as `first_stage_model.*`."""
    data, _ = load_tensors(path)
    state = normalize_state_dict(data)
    out = {}
    for key, value in state.items():
        if key.startswith(("loss.", EMA_PREFIX)):
            continue
        out[key if key.startswith(VAE_PREFIX) else VAE_PREFIX + key] = value
    if not any(k.startswith(VAE_PREFIX + "decoder.") for k in out):
        raise ModelLoadError(f"{path}: not a VAE file (no 'decoder.*' weights)")
    return out


def with_vae(components: SDComponents, vae_path: Path) -> SDComponents:
    """A copy of `components` whose VAE weights come from `vae_path`."""
    state = ldm_to_vae(read_vae_state(vae_path), components.config.vae)
    vae = _assign(AutoencoderKL, components.config.vae, state, "VAE", str(vae_path), components.unet.dtype)
    replaced = copy.copy(components)
    replaced.vae = vae
    return replaced


def looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def load_model_uncached(source: str | os.PathLike[str], vae: str | os.PathLike[str] | None = None,
                        dtype: torch.dtype = torch.float32, hashes: HashCache | None = None) -> LoadedModel:
    """Load `source` (file, diffusers folder or hub id), optionally replacing its VAE.

    `hashes` remembers file hashes between runs; without it they are computed (and forgotten).
    """
    hashes = hashes if hashes is not None else HashCache(None)
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        components = load_single_file(path, dtype)
        name, model_hash = path.stem, hashes.get(path).autov2
    elif os.path.lexists(path) and not path.is_dir():
        regular_file_stat(path)  # a FIFO, a device, a broken link: says which
        raise ModelLoadError(f"{path}: not a model file")
    elif path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise ModelLoadError(f"{path}: folder is not a diffusers model (no model_index.json)")
        components, name, model_hash = load_diffusers(str(path), dtype), path.name, None
    elif looks_like_hub_id(text):
        components, name, model_hash = load_diffusers(text, dtype), text.split("/")[-1], None
    else:
        raise ModelLoadError(f"{text}: no such model file or folder (expected a .safetensors/.ckpt "
                             "file, a diffusers folder, or a hub id like 'org/name')")
    loaded = LoadedModel(components, name, str(path if path.exists() else text), model_hash)
    if vae is not None:
        vae_path = Path(vae).expanduser()
        if os.path.lexists(vae_path) and not vae_path.is_dir():
            regular_file_stat(vae_path)  # a FIFO, a device, a broken link: says which
        if not vae_path.is_file():
            raise ModelLoadError(f"{vae_path}: no such VAE file")
        loaded.components = with_vae(components, vae_path)
        loaded.vae_name, loaded.vae_hash = vae_path.name, hashes.get(vae_path).autov2
    return loaded


class ModelCache:
    """Keeps the most recently used model(s) in memory, keyed by file identity and VAE."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._items: dict[tuple, LoadedModel] = {}

    @staticmethod
    def _key(source: str, vae: str | None) -> tuple:
        def ident(p: str | None) -> tuple:
            if p is None:
                return (None,)
            path = Path(p).expanduser()
            real = os.path.realpath(path)  # `resolve` raises on a link loop
            if path.is_file():
                st = path.stat()
                return (real, st.st_size, st.st_mtime_ns)
            return (real if path.exists() else p,)

        return ident(source) + ident(vae)

    def get(self, source: str | os.PathLike[str], vae: str | os.PathLike[str] | None = None,
            dtype: torch.dtype = torch.float32, hashes: HashCache | None = None) -> LoadedModel:
        key = self._key(str(source), None if vae is None else str(vae)) + (dtype,)
        if key in self._items:
            self._items[key] = self._items.pop(key)  # most recent last
            return self._items[key]
        while len(self._items) >= self.capacity:
            self._items.pop(next(iter(self._items)))
        model = load_model_uncached(source, vae, dtype, hashes)
        self._items[key] = model
        return model

    def clear(self) -> None:
        self._items.clear()

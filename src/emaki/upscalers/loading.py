"""Upscaler model files → spandrel models: read safely, detect the architecture, explain refusals.

A file is read as safetensors or through emaki's restricted unpickler (`emaki.models.safe_load`),
never with spandrel's own reader: a TorchScript archive is refused before anything in it is
read (loading one runs its code), and so is a pickle that asks for anything but tensors and
plain containers. The state dict is then handed to spandrel, which recognises ESRGAN,
Real-ESRGAN (RRDBNet and SRVGGNet "Compact"), SwinIR, HAT, DAT and many more from its keys.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emaki.errors import ModelLoadError
from emaki.models.safe_load import TORCH_ZIP, load_pickle, load_tensors, sniff_format
from emaki.models.safetensors_header import read_safetensors_header
from emaki.upscalers.spandrel_import import import_spandrel

# safetensors dtype names → torch (for shape-only reads of a header).
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


@dataclass
class UpscalerModel:
    """A loaded image-to-image model: spandrel's descriptor plus what emaki shows about it."""

    path: Path
    descriptor: Any  # spandrel.ImageModelDescriptor (spandrel ships no type information)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def tiles_well(self) -> bool:
        """False for models that tile internally and want the whole image (spandrel's advice)."""
        return str(self.descriptor.tiling.name) != "INTERNAL"

    def to(self, device: torch.device, dtype: torch.dtype) -> UpscalerModel:
        """On `device`, in `dtype` when the architecture supports it (else float32)."""
        supported = {torch.float32: True, torch.float16: self.descriptor.supports_half,
                     torch.bfloat16: self.descriptor.supports_bfloat16}
        self.descriptor.to(device=device, dtype=dtype if supported.get(dtype, False) else torch.float32)
        self.descriptor.eval()
        return self

    @property
    def device(self) -> torch.device:
        return torch.device(self.descriptor.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) in [0, 1] on the model's device and dtype → (1, 3, h·scale, w·scale)."""
        return self.descriptor(image)


def refuse_torchscript(path: Path) -> None:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl`; loading
    one runs the code it carries, so it is refused by name before anything is read."""
    if sniff_format(path) != TORCH_ZIP:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return  # the restricted reader names what is wrong with it
    if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
        raise ModelLoadError(f"{path}: a TorchScript archive, refused: loading one runs the code it carries; "
                             "use a .safetensors or .pth file of the same model")


def read_state_dict(path: Path, *, shapes_only: bool = False) -> dict[str, Any]:
    """The file's tensors (nested as stored: spandrel unwraps `params_ema` and the like);
    `shapes_only` builds meta tensors without reading any tensor data."""
    refuse_torchscript(path)
    if not shapes_only:
        return load_tensors(path)[0]
    if sniff_format(path) != "safetensors":
        data = load_pickle(path, map_location="meta")
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
        return data
    header = read_safetensors_header(path)
    return {name: torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES.get(str(entry.get("dtype")), torch.float32),
                              device="meta")
            for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}


def _descriptor(path: Path, state_dict: dict[str, Any]) -> Any:
    """spandrel's model for `state_dict`, or an error naming the file and what it is."""
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.MAIN_REGISTRY.load(spandrel.canonicalize_state_dict(state_dict))
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(f"{path}: not an upscaler model spandrel knows (ESRGAN, Real-ESRGAN, SwinIR, HAT, "
                             "DAT, ...): no known architecture matches its tensor names") from None
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 (an architecture's loader fails in many ways on odd shapes)
        raise ModelLoadError(f"{path}: looks like an upscaler model but does not load "
                             f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(f"{path}: a {descriptor.architecture.name} {descriptor.purpose} model, not an upscaler")
    if descriptor.purpose == "FaceSR":
        raise ModelLoadError(f"{path}: a {descriptor.architecture.name} face restoration model, not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelLoadError(f"{path}: a {descriptor.architecture.name} model for {descriptor.input_channels}-channel "
                             "images; emaki upscales RGB images (3 channels)")
    return descriptor


def load_upscaler_model(path: str | Path) -> UpscalerModel:
    """The model in `path` (safetensors or a restricted pickle), on the CPU in float32."""
    path = Path(path)
    return UpscalerModel(path, _descriptor(path, read_state_dict(path)))


def describe_upscaler(path: str | Path) -> tuple[str, int]:
    """(architecture, scale) of the model in `path`, from tensor names and shapes only."""
    path = Path(path)
    state_dict = read_state_dict(path, shapes_only=True)
    with torch.device("meta"):  # the modules are built without memory and nothing is copied
        descriptor = _descriptor(path, state_dict)
    return str(descriptor.architecture.name), int(descriptor.scale)


class UpscalerCache:
    """The last upscaler model an engine loaded, kept for the next call on the same file
    (unchanged on disk), device and dtype: a folder of images loads the model once."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._model: UpscalerModel | None = None

    def get(self, path: Path, device: torch.device, dtype: torch.dtype) -> UpscalerModel:
        try:
            stat = path.stat()
        except OSError:
            raise ModelLoadError(f"{path}: no such upscaler model file") from None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(device), dtype)
        if key != self._key or self._model is None:
            self._key, self._model = None, None  # the old model goes before the new one loads
            self._model = load_upscaler_model(path).to(device, dtype)
            self._key = key
        return self._model

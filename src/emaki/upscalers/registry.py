"""Which upscalers there are and what a name means: A1111's built-in ones (latent modes,
Lanczos, Nearest, None) and the model files in the workspace's `upscalers` folders.

Names follow A1111 v1.10: a model file is named by its stem (`4x-AnimeSharp.pth` →
"4x-AnimeSharp"); A1111's built-in Real-ESRGAN and DAT entries keep their menu names
("R-ESRGAN 4x+ Anime6B") and stand for the file A1111 downloads for them
(`RealESRGAN_x4plus_anime_6B.pth`). emaki downloads nothing: when that file is not in an
upscalers folder, the name is refused with the file name and the folder to put it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from emaki.errors import ParamsError
from emaki.networks import walk_files
from emaki.workspace import Workspace

# A1111's `shared.latent_upscale_modes`: interpolation mode and antialias.
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# A1111's `UpscalerNone`, `UpscalerLanczos`, `UpscalerNearest`: plain resampling.
IMAGE_UPSCALERS = {"None": Image.Resampling.LANCZOS, "Lanczos": Image.Resampling.LANCZOS,
                   "Nearest": Image.Resampling.NEAREST}
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class KnownModel:
    """An upscaler A1111 lists by name and downloads on first use."""

    name: str
    file: str
    scale: int
    a1111_folder: str  # where A1111 keeps it, under models/


# A1111 v1.10 `realesrgan_model.get_realesrgan_models` and `dat_model.get_dat_models`.
KNOWN_MODELS = (
    KnownModel("R-ESRGAN General 4xV3", "realesr-general-x4v3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN General WDN 4xV3", "realesr-general-wdn-x4v3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN AnimeVideo", "realesr-animevideov3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN 4x+", "RealESRGAN_x4plus.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN 2x+", "RealESRGAN_x2plus.pth", 2, "RealESRGAN"),
    KnownModel("DAT x2", "DAT_x2.pth", 2, "DAT"),
    KnownModel("DAT x3", "DAT_x3.pth", 3, "DAT"),
    KnownModel("DAT x4", "DAT_x4.pth", 4, "DAT"),
)
_KNOWN = {model.name: model for model in KNOWN_MODELS}
_KNOWN_BY_FILE = {model.file.lower(): model for model in KNOWN_MODELS}

UpscalerKind = Literal["latent", "image", "model"]


@dataclass(frozen=True)
class Upscaler:
    """One upscaler by its A1111 name; `path` is the model file of a "model" upscaler, and
    `scale` its factor when known without opening the file."""

    name: str
    kind: UpscalerKind
    path: Path | None = None
    scale: int | None = None


def builtin_upscaler(name: str) -> Upscaler | None:
    if name in LATENT_UPSCALERS:
        return Upscaler(name, "latent")
    if name in IMAGE_UPSCALERS:
        return Upscaler(name, "image")
    return None


def model_upscalers(workspace: Workspace) -> list[Upscaler]:
    """Every model file in the upscaler folders, by its A1111 name (known files by their
    menu name, the others by their stem), emaki's own folder first."""
    found = []
    for path in walk_files(workspace.folders("upscalers"), MODEL_SUFFIXES):
        known = _KNOWN_BY_FILE.get(path.name.lower())
        found.append(Upscaler(known.name, "model", path, known.scale) if known else Upscaler(path.stem, "model", path))
    return found


def list_upscalers(workspace: Workspace) -> list[Upscaler]:
    """What A1111 lists as upscalers (`/sdapi/v1/upscalers`): None, Lanczos, Nearest, then the
    model files found. Latent modes are hires-only and listed apart (`LATENT_UPSCALERS`)."""
    return [Upscaler(name, "image") for name in IMAGE_UPSCALERS] + model_upscalers(workspace)


def _missing_known(known: KnownModel, workspace: Workspace, field: str) -> ParamsError:
    folders = workspace.folders("upscalers")
    where = f"{folders[0]}" + (f" (searched: {', '.join(map(str, folders))})" if len(folders) > 1 else "")
    return ParamsError(f"{field}: {known.name!r} needs the file {known.file}, which is not in an upscalers "
                       f"folder; put it in {where} (emaki downloads nothing)")


def find_upscaler(name: str, workspace: Workspace | None, *, field: str = "upscaler",
                  allow_path: bool = False) -> Upscaler:
    """The upscaler `name` means: a built-in, A1111's name of a known model file, a model
    file's stem (or file name) in the workspace, or — only where `allow_path` (a command line
    or Python caller naming their own file) — a path to a model file."""
    builtin = builtin_upscaler(name)
    if builtin is not None:
        return builtin
    found = model_upscalers(workspace) if workspace is not None else []
    if workspace is not None:
        for upscaler in found:
            if name == upscaler.name:
                return upscaler
        if name in _KNOWN:
            raise _missing_known(_KNOWN[name], workspace, field)
        for upscaler in found:
            assert upscaler.path is not None
            if name in (upscaler.path.stem, upscaler.path.name):
                return upscaler
    if allow_path and Path(name).expanduser().is_file():
        path = Path(name).expanduser()
        known = _KNOWN_BY_FILE.get(path.name.lower())
        return Upscaler(known.name, "model", path, known.scale) if known else Upscaler(path.stem, "model", path)
    names = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS, *(upscaler.name for upscaler in found)]
    where = (f"; model files go in {workspace.folders('upscalers')[0]}" if workspace is not None
             else "; upscaler models are not available here")
    raise ParamsError(f"{field}: {name!r} is not an upscaler emaki has (it has: {', '.join(names)}){where}")

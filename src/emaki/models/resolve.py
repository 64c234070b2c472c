"""Finding a model by what the user typed: a path, a name in the models folder, a hub id."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from emaki.errors import ModelLoadError
from emaki.models.loader import looks_like_hub_id
from emaki.workspace import Workspace

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
DEMO_MODEL_FILE = "emaki-demo.safetensors"


def demo_model_path() -> Path:
    """The shipped demo checkpoint (single-file LDM layout, fp16, config in its metadata),
    trained by `scripts/train_demo.py` (`emaki.demo`)."""
    return Path(str(resources.files("emaki") / "data" / "demo" / DEMO_MODEL_FILE))


def default_model() -> str:
    """The bundled demo model, used when no model is given."""
    path = demo_model_path()
    if not Path(path).is_file():
        raise ModelLoadError(f"{path}: the bundled demo model is missing from this install; pass --model")
    return str(path)


def find_model_by_name(name: str, workspace: Workspace) -> str | None:
    """A model *named* somewhere the user did not choose (an infotext's `Model:`): a file stem
    under the workspace's model folders or the demo model, never a path or a hub id."""
    if not name or Path(name).name != name or name in (".", ".."):
        return None
    for folder in workspace.model_search:
        for suffix in ("",) + MODEL_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return str(candidate)
    demo = demo_model_path()
    return str(demo) if name in (demo.stem, demo.name) and demo.is_file() else None


def resolve_model(name: str | None, workspace: Workspace) -> str:
    """A path, or a file stem found under the workspace's model folders, or a hub id, or the
    demo model."""
    if not name:
        return default_model()
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    for folder in workspace.model_search:
        for suffix in ("",) + MODEL_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return str(candidate)
    demo = demo_model_path()
    if name in (demo.stem, demo.name) and demo.is_file():  # infotexts name the demo model so
        return str(demo)
    if looks_like_hub_id(name):
        return name
    raise ModelLoadError(f"{name}: no such model file, model name or hub id")

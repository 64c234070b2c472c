"""The closed sets of values some axes take (A1111's `AxisOption.choices`): the names a grid
axis of samplers, schedules, checkpoints, VAEs, styles, hires upscalers or RNG sources may hold.

A1111's UI offers these in a dropdown (and its API reads such an axis's values from
`*_values_dropdown`); emaki lists them for the web page (`GET /api/grid/axes`) and
`emaki grid --list-axes`. Each function takes the workspace whose files it lists (None: only
what ships with emaki). Imports are deferred: the axis table stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emaki.workspace import Workspace

Choices = Callable[[Workspace | None], list[str]]

#: A1111's "VAE" axis choices before the files: the checkpoint's own VAE either way.
VAE_DEFAULTS = ("Automatic", "None")


def sampler_choices(workspace: Workspace | None) -> list[str]:
    from emaki.sampling import SAMPLERS

    return [sampler.name for sampler in SAMPLERS]


def schedule_choices(workspace: Workspace | None) -> list[str]:
    from emaki.sampling import SCHEDULES

    return [schedule.label for schedule in SCHEDULES]


def rng_choices(workspace: Workspace | None) -> list[str]:
    return ["GPU", "CPU", "NV"]  # A1111's order


def checkpoint_choices(workspace: Workspace | None) -> list[str]:
    """The checkpoint files of the workspace's model folders (their path under the folder, as
    A1111 titles them without the hash), diffusers folders, then the bundled demo model."""
    from emaki.engine.inventory import CHECKPOINT_SUFFIXES
    from emaki.models.resolve import demo_model_path
    from emaki.networks import walk_files

    names: list[str] = []
    for folder in workspace.folders("checkpoints") if workspace is not None else []:
        for path in walk_files([folder], CHECKPOINT_SUFFIXES):
            # VAEs kept among the checkpoints (emaki's models/VAE is under models/) are not checkpoints.
            if ".vae." not in path.name.lower() and path.parent.name.lower() != "vae":
                names.append(_under(path, folder))
        if folder.is_dir():
            names += [index.parent.name for index in sorted(folder.glob("*/model_index.json"))]
    names.append(demo_model_path().name)
    return sorted(dict.fromkeys(names), key=str.casefold)


def _under(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name


def vae_choices(workspace: Workspace | None) -> list[str]:
    """"Automatic" and "None" (the checkpoint's own VAE), then the VAE files by name."""
    from emaki.engine.inventory import VAE_SUFFIXES
    from emaki.networks import walk_files

    files = walk_files(workspace.folders("vaes"), VAE_SUFFIXES) if workspace is not None else []
    return [*VAE_DEFAULTS, *dict.fromkeys(path.name for path in files)]


def style_choices(workspace: Workspace | None) -> list[str]:
    """The style names of the workspace's styles files (its own first, then an A1111 install's)."""
    from emaki.prompts.styles import read_styles, styles_files

    return list(read_styles(styles_files(workspace))) if workspace is not None else []


def hires_upscaler_choices(workspace: Workspace | None) -> list[str]:
    """The latent modes, then None/Lanczos/Nearest and the upscaler model files (A1111's order)."""
    from emaki.upscalers import LATENT_UPSCALERS
    from emaki.upscalers.registry import IMAGE_UPSCALERS, model_upscalers

    models = [upscaler.name for upscaler in model_upscalers(workspace)] if workspace is not None else []
    return list(dict.fromkeys([*LATENT_UPSCALERS, *IMAGE_UPSCALERS, *models]))

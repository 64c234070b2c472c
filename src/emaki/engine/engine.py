"""`Engine`: the one object that runs models. It owns the model cache, the network libraries,
the file-hash cache, the preview maps and the `DevicePolicy`, over one `Workspace`; the CLI, the
server's worker and `emaki.generate` each hold one. Nothing in it is process-wide.
"""

from __future__ import annotations

import threading
from pathlib import Path

from emaki.devices import DevicePolicy
from emaki.engine.inventory import VAE_SUFFIXES
from emaki.engine.networks import NetworkLibraries
from emaki.engine.output import dated_folder
from emaki.engine.patching import ModelHandle
from emaki.engine.pipeline import plan, run_generation, text_encoder_width
from emaki.engine.policy import ensure_params_allowed
from emaki.engine.preview import Previewer
from emaki.engine.run import Cancel, GenerationResult, ProgressCallback
from emaki.errors import ModelLoadError
from emaki.models.hashes import HashCache
from emaki.models.loader import LoadedModel, ModelCache
from emaki.models.resolve import resolve_model
from emaki.networks import walk_files
from emaki.params import GenerationParams
from emaki.workspace import Workspace


def resolve_vae(name: str | None, workspace: Workspace) -> str | None:
    """A VAE path, or a file name/stem found where `emaki models` lists VAEs (how infotexts
    and listings name them)."""
    if not name:
        return None
    if Path(name).expanduser().is_file():
        return name
    for path in walk_files(workspace.folders("vaes"), VAE_SUFFIXES):
        if name in (path.name, path.stem):
            return str(path)
    raise ModelLoadError(f"{name}: no such VAE file or VAE name in {', '.join(map(str, workspace.folders('vaes')))}")


class Engine:
    """Generates images from `GenerationParams`; one generation at a time per engine."""

    def __init__(self, workspace: Workspace, policy: DevicePolicy | None = None, *, cache_capacity: int = 1) -> None:
        self.workspace = workspace
        self.policy = policy or DevicePolicy.choose()
        self.models = ModelCache(cache_capacity)
        self.networks = NetworkLibraries(workspace)
        self.hashes = HashCache(workspace.hash_cache)
        self.previews = Previewer()
        self._running = threading.Lock()

    def load(self, model: str | None, vae: str | None = None) -> LoadedModel:
        """A model by path or name (the demo model when None), kept in the cache."""
        return self.models.get(resolve_model(model, self.workspace), resolve_vae(vae, self.workspace),
                               self.policy.dtype, self.hashes)

    def generate(self, params: GenerationParams, *, progress: ProgressCallback | None = None,
                 cancel: Cancel | None = None, save: bool = True, out_dir: Path | None = None) -> GenerationResult:
        """Make `params.batch_size × params.n_iter` images; write them (to `out_dir`, default
        `outputs/<date>`) unless `save` is False. Refused prompts raise `PolicyViolation` before
        anything loads; `cancel` interrupts or skips (see `Cancel`)."""
        ensure_params_allowed(params)
        with self._running:
            self.policy.apply()
            model = self.load(params.model, params.vae)
            preview_map = self.previews.prepare(model.components) if progress is not None else None
            embeddings = self.networks.embeddings(text_encoder_width(model))
            folder = (out_dir if out_dir is not None else dated_folder(self.workspace.outputs)) if save else None
            with ModelHandle(model) as handle:  # every patch is undone here, however the run ends
                run = plan(params, handle, self.policy, self.networks)
                return run_generation(run, embeddings, folder=folder, cancel=cancel, progress=progress,
                                      preview_map=preview_map)

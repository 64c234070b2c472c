"""`Engine`: the one object that runs models. It owns the model cache, the network libraries,
the file-hash cache, the preview maps and the `DevicePolicy`, over one `Workspace`; the CLI, the
server's worker and `emaki.generate` each hold one. Nothing in it is process-wide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from emaki.devices import DevicePolicy
from emaki.engine.faces import FaceRestoration
from emaki.engine.image_prompts import workspace_run_prompts
from emaki.engine.inventory import VAE_SUFFIXES
from emaki.engine.networks import NetworkLibraries
from emaki.engine.output import dated_folder
from emaki.engine.patching import ModelHandle
from emaki.engine.pipeline import (
    image_seeds,
    plan,
    resolve_seeds,
    run_generation,
    text_encoder_width,
)
from emaki.engine.policy import ensure_params_allowed
from emaki.engine.preview import Previewer
from emaki.engine.run import Cancel, GenerationResult, ProgressCallback
from emaki.errors import EmakiError, ModelLoadError
from emaki.models.hashes import HashCache
from emaki.models.loader import LoadedModel, ModelCache
from emaki.models.resolve import resolve_model
from emaki.networks import walk_files
from emaki.params import GenerationParams
from emaki.upscalers import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    UpscalerCache,
    describe_upscaler,
    find_upscaler,
    list_upscalers,
    upscale_image,
)
from emaki.upscalers.upscale import UpscaleCallback, check_upscale_options, open_picture
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.merge.lineage import LineageResult
    from emaki.training.params import TrainingParams
    from emaki.training.report import TrainingCallback, TrainingOutcome
    from emaki.xyz.run import GridProgressCallback, GridResult


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
        `outputs/<date>`) unless `save` is False. Each image's prompts are the params' with their
        styles applied and wildcards expanded from its seed; refused prompts raise
        `PolicyViolation` before anything loads; `cancel` interrupts or skips (see `Cancel`)."""
        params = resolve_seeds(params)
        prompts = workspace_run_prompts(params, image_seeds(params), self.workspace)
        ensure_params_allowed(params, prompts.images)
        with self._running:
            self.policy.apply()
            model = self.load(params.model, params.vae)
            preview_map = self.previews.prepare(model.components) if progress is not None else None
            if progress is not None:  # TAESD previews when the user has its decoder
                progress = self.previews.decoded(progress, model.components, self.workspace)
            embeddings = self.networks.embeddings(text_encoder_width(model))
            folder = (out_dir if out_dir is not None else dated_folder(self.workspace.outputs)) if save else None
            with ModelHandle(model) as handle:  # every patch is undone here, however the run ends
                run = plan(params, handle, self.policy, self.networks, prompts, faces=self.face_restoration)
                return run_generation(run, embeddings, folder=folder, cancel=cancel, progress=progress,
                                      preview_map=preview_map)

    # --- X/Y/Z plot (issue 18: A1111's scripts/xyz_grid.py) ---

    def grid(self, params: GenerationParams, x: Any = None, y: Any = None, z: Any = None, *,
             progress: GridProgressCallback | None = None, cancel: Cancel | None = None, save: bool = True,
             out_dir: Path | None = None, **options: Any) -> GridResult:
        """An X/Y/Z plot over `params` (`emaki.xyz.run_grid`): each axis as "Steps: 10-30 (+10)",
        {"axis": "Sampler", "values": [...]} or an `AxisSpec`; `options` are the other `GridSpec`
        fields (draw_legend, include_sub_grids, margin_size, ...)."""
        from emaki.xyz import GridSpec, run_grid

        spec = GridSpec.create(x=x, y=y, z=z, **options)
        return run_grid(self, params, spec, progress=progress, cancel=cancel, save=save, out_dir=out_dir)

    # --- training (issue: A1111's textual inversion and hypernetwork training) ---

    def train(self, params: TrainingParams, *, progress: TrainingCallback | None = None,
              cancel: threading.Event | None = None) -> TrainingOutcome:
        """Train an embedding or a hypernetwork (`params.kind`) on a folder of images; the file
        lands in the workspace's embeddings/hypernetworks folder. Setting `cancel` saves and stops."""
        from emaki.training.trainer import run_training

        with self._running:
            self.policy.apply()
            return run_training(self, params, progress=progress, cancel=cancel)

    def train_embedding(self, name: str, data: str | Path, steps: int, **options: Any) -> TrainingOutcome:
        """`train` for an embedding: `options` are `TrainingParams` fields (learn_rate, init_text, ...)."""
        return self._train_kind("embedding", name, data, steps, options)

    def train_hypernetwork(self, name: str, data: str | Path, steps: int, **options: Any) -> TrainingOutcome:
        """`train` for a hypernetwork: `options` are `TrainingParams` fields (layer_structure, ...)."""
        return self._train_kind("hypernetwork", name, data, steps, options)

    def _train_kind(self, kind: str, name: str, data: str | Path, steps: int, options: dict[str, Any]) -> TrainingOutcome:
        from emaki.training.params import TrainingParams

        progress, cancel = options.pop("progress", None), options.pop("cancel", None)
        params = TrainingParams.create(kind=kind, name=name, data=str(data), steps=steps, **options)
        return self.train(params, progress=progress, cancel=cancel)

    def create_embedding(self, name: str, *, init_text: str = "*", num_vectors_per_token: int = 1,
                         model: str | None = None, overwrite: bool = False, save_format: str = "pt") -> Path:
        """A new (step 0) embedding for `model`, written to the workspace's embeddings folder."""
        from emaki.training.create import create_embedding_file

        with self._running:
            return create_embedding_file(self.workspace.folders("embeddings")[0], self.load(model), name,
                                         init_text=init_text, num_vectors_per_token=num_vectors_per_token,
                                         overwrite=overwrite, save_format=save_format)

    def create_hypernetwork(self, name: str, *, sizes: list[int] | None = None,
                            layer_structure: list[float] | None = None, activation_func: str = "linear",
                            weight_initialization: str = "Normal", add_layer_norm: bool = False,
                            dropout_structure: list[float] | None = None, model: str | None = None,
                            overwrite: bool = False) -> Path:
        """A new (step 0) hypernetwork for `model`, written to the workspace's hypernetworks folder."""
        from emaki.training.create import create_hypernetwork_file

        with self._running:
            return create_hypernetwork_file(
                self.workspace.folders("hypernetworks")[0], self.load(model), name, sizes=sizes,
                layer_structure=layer_structure or (1.0, 2.0, 1.0), activation_func=activation_func,
                weight_initialization=weight_initialization, add_layer_norm=add_layer_norm,
                dropout_structure=dropout_structure, overwrite=overwrite)

    # --- merging (issue 15: A1111's checkpoint merger, LoRA bake and extract; emaki.merge.by_name) ---

    def merge(self, models: Sequence[str | Path], *, mode: str | None = None, alpha: float = 0.3,
              blocks: Sequence[float] | str | None = None, loras: Sequence[tuple[str, float, float]] = (),
              output: str | Path, overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> Path:
        """Merge `models` (A B [C], found as `generate` finds a model, or by hash) as `emaki merge`
        does — `mode` weighted-sum (A·(1-α)+B·α) or add-difference (A+(B-C)·α), chosen by the
        count when None; `blocks`: 25 UNet block weights — baking `loras` ((name, te, unet)) into
        the result; written as `output` (a file name) in the checkpoint folder. `progress(done,
        total)` in bytes; setting `cancel` stops it with `Interrupted`, writing nothing."""
        from emaki.merge.by_name import plan_merge, run_merge

        planned = plan_merge(self.workspace, self.hashes, models, output=output, mode=mode, alpha=alpha,
                             blocks=blocks, loras=loras, overwrite=overwrite)
        return run_merge(planned.recipe, planned.out, hashes=self.hashes, overwrite=overwrite, progress=progress,
                         cancel=cancel).path

    def extract_lora(self, tuned: str | Path, base: str | Path, *, rank: int = 32, output: str | Path,
                     overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None,
                     cancel: threading.Event | None = None) -> Path:
        """The kohya LoRA of rank `rank` closest to `tuned − base` (as `emaki lora extract`),
        written as `output` (a file name) in the LoRA folder. `progress(done, total, key)` per
        layer; setting `cancel` stops it with `Interrupted`, writing nothing."""
        from emaki.merge.by_name import plan_extraction, run_extraction

        planned = plan_extraction(self.workspace, self.hashes, tuned, base, output=output, rank=rank,
                                  overwrite=overwrite)
        return run_extraction(planned.tuned, planned.base, planned.out, rank=planned.rank, overwrite=overwrite,
                              progress=progress, cancel=cancel).path

    def lineage(self, model: str | Path, candidates: Sequence[str | Path], *, nonnegative: bool = False,
                progress: Callable[[int, int], None] | None = None,
                cancel: threading.Event | None = None) -> LineageResult:
        """What `model` is made of, block by block, as a combination of `candidates` (each found as
        `merge` finds a model), as `emaki lineage` traces it: the result's `to_dict()` is what
        `emaki lineage --json` prints, `summary()` its lines. `nonnegative`: coefficients ≥ 0.
        `progress(done, total)` in bytes; setting `cancel` stops it with `Interrupted`."""
        from emaki.merge.lineage_by_name import plan_lineage, run_lineage

        planned = plan_lineage(self.workspace, self.hashes, model, candidates, nonnegative=nonnegative)
        return run_lineage(planned, progress=progress, cancel=cancel)

    def hashes_of(self, model: str | Path) -> dict[str, str | None]:
        """The checkpoint's hashes as `emaki hash` shows them (legacy, AutoV2, sha256, tensor
        data), the model found as `merge` finds one; cached in the workspace's hash cache."""
        from emaki.merge.by_name import find_checkpoint

        found = self.hashes.get(find_checkpoint(model, self.workspace, self.hashes, "model"), tensor_data=True)
        return {"legacy": found.legacy, "autov2": found.autov2, "sha256": found.sha256,
                "tensor_data": found.tensor_data}

    # --- upscalers (issue 17: A1111's extras) ---

    @cached_property
    def upscaler_models(self) -> UpscalerCache:
        """The last upscaler model loaded, kept for the next image."""
        return UpscalerCache()

    def upscalers(self) -> list[dict[str, Any]]:
        """What `upscale` takes: None, Lanczos, Nearest, then the model files in the workspace's
        upscaler folders, as rows of name, kind, path, scale and architecture (read from the
        files' tensor names and shapes; a file no architecture matches has a `reason`)."""
        rows = []
        for upscaler in list_upscalers(self.workspace):
            row: dict[str, Any] = {"name": upscaler.name, "kind": upscaler.kind, "scale": upscaler.scale,
                                   "path": str(upscaler.path) if upscaler.path else None, "architecture": None}
            if upscaler.path is not None:
                try:
                    row["architecture"], row["scale"] = describe_upscaler(upscaler.path)
                except EmakiError as e:
                    row["reason"] = str(e)
            rows.append(row)
        return rows

    def upscale(self, image: Image.Image | str | Path, upscaler: str, scale: float = 2.0, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, progress: UpscaleCallback | None = None) -> Image.Image:
        """`image` (a picture or its path) upscaled by `scale` with `upscaler`: a name from
        `upscalers()`, an A1111 name such as "R-ESRGAN 4x+" whose file is in the workspace, or a
        model file's path. Models run in tiles of `tile` pixels overlapping by `overlap` (0: no
        tiling), on this engine's device; `progress` hears of every tile."""
        check_upscale_options(scale, tile, overlap)
        found = find_upscaler(upscaler, self.workspace, field="upscaler", allow_path=True)
        picture = image if isinstance(image, Image.Image) else open_picture(image)
        with self._running:
            self.policy.apply()
            model = (self.upscaler_models.get(found.path, self.policy.device, self.policy.dtype)
                     if found.path is not None else None)
            return upscale_image(picture, found, scale, model=model, tile=tile, overlap=overlap, progress=progress)

    @cached_property
    def face_restoration(self) -> FaceRestoration:
        """The face detector and the last restorer loaded, kept for the next picture."""
        return FaceRestoration()

    def restore_faces(self, image: Image.Image | str | Path, restorer: str = "GFPGAN", visibility: float = 1.0, *,
                      field: str = "restore_faces") -> Image.Image:
        """`image` with its faces restored (A1111's face restoration; `emaki.faces`), blended in by
        `visibility`; an error naming the missing file when the restorer or the detector is absent."""
        self.face_restoration.check(self.workspace, restorer, field)
        picture = image if isinstance(image, Image.Image) else open_picture(image)
        with self._running:
            self.policy.apply()
            return self.face_restoration.restore(self.workspace, picture, restorer=restorer, visibility=visibility,
                                                 device=self.policy.device, field=field)


    def sd_upscale(self, params: GenerationParams, image: Image.Image | str | Path, upscaler: str = "None",
                   scale: float = 2.0, *, overlap: int = 64, progress: ProgressCallback | None = None,
                   cancel: Cancel | None = None) -> GenerationResult:
        """A1111's "SD upscale" img2img script (`emaki.engine.sd_upscale`): `image` upscaled by
        `scale` with `upscaler`, cut into `params.width`×`params.height` tiles overlapping by
        `overlap`, each redrawn by img2img with `params`, blended back; one picture per `n_iter`,
        not written to disk."""
        from emaki.engine.sd_upscale import sd_upscale

        picture = image if isinstance(image, Image.Image) else open_picture(image)
        return sd_upscale(self, params, picture, upscaler=upscaler, scale=scale, overlap=overlap,
                          progress=progress, cancel=cancel)

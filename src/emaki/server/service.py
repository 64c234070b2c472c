"""Between HTTP and the engine: turns request fields plus server settings into checked
`GenerationParams` and queues them. Both APIs (A1111's and the native one) go through here,
so the policy, the name checks and the settings apply the same way to every request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from emaki.engine.engine import Engine
from emaki.engine.hires import check_upscaler, target_size
from emaki.engine.image_prompts import ImagePrompt, styled
from emaki.engine.img2img import default_size
from emaki.engine.networks import kind_for_tag
from emaki.engine.policy import ensure_params_allowed
from emaki.errors import EmakiError, ParamsError
from emaki.files import atomic_write
from emaki.jobs.faults import StorageError, StorageFull, WorkersUnavailable, storage_error
from emaki.jobs.store import Job, JobStore
from emaki.jobs.worker import Worker
from emaki.params import GenerationParams, ImageTooLarge, expand_speed
from emaki.prompts import extract_networks
from emaki.prompts.styles import Style, read_styles, styles_files
from emaki.sampling import parse_sampler_name
from emaki.server.catalog import Catalog, CheckpointEntry, NameNotAllowed
from emaki.server.options import OPTION_FIELDS, Options, check_options, output_folder_options
from emaki.xyz.spec import GridSpec

MAX_PIXELS = 2048 * 2048  # the most this server draws at once: an image, its noise, a hires pass
NATIVE_SIZE = 512  # a size left to the model is checked as SD 1.x's


class ModelBusy(EmakiError):
    """What the request needs is held by a long run (a training job) (HTTP 409)."""


def error_status(error: EmakiError) -> int:
    """The HTTP status of an error a request caused (or met: the server cannot write, 507/503)."""
    return error_class_status(type(error))


def error_class_status(kind: type[EmakiError]) -> int:
    if issubclass(kind, StorageError):
        return 507 if issubclass(kind, StorageFull) else 503
    if issubclass(kind, WorkersUnavailable):  # --executor ray: the cluster's workers are gone
        return 503
    if issubclass(kind, ImageTooLarge):
        return 413
    if issubclass(kind, ParamsError):
        return 422
    if issubclass(kind, ModelBusy):
        return 409
    return 400  # policy refusals, names outside the folders, unreadable inputs


def check_size_limits(params: GenerationParams, init: Image.Image | None = None) -> None:
    """Every size a job would draw at is within `MAX_PIXELS`: the image (an img2img image's own
    size when the request gives none), the seed-resize noise and the hires fix's second pass."""
    width, height = params.width, params.height
    if width is None or height is None:
        default = default_size(init, 8) if init is not None else (NATIVE_SIZE, NATIVE_SIZE)
        width, height = width or default[0], height or default[1]
    _within("size", width, height)
    if params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0:
        _within("seed_resize_from_w/h", params.seed_resize_from_w, params.seed_resize_from_h)
    if params.enable_hr:
        hires_width, hires_height = target_size(params.model_copy(update={"width": width, "height": height}))
        _within("hires size (hr_scale, hr_resize_x/y)", hires_width, hires_height)


def _within(field: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ParamsError(f"{field}: {width}x{height} is more than this server makes (2048x2048)")


def failed_job_status(job: Job) -> int:
    """The HTTP status of a job that failed in the queue, for a client that waited on it: as the
    error would have answered at submission (a policy refusal met only when the job ran, e.g. an
    embedding that encodes refused words: 400; a full disk: 507, ...), 500 for anything else."""
    found = error_class_named((job.result or {}).get("error_type"))
    return 500 if found is None else error_class_status(found)


def error_class_named(name: object) -> type[EmakiError] | None:
    """The `EmakiError` subclass a job recorded as its `error_type`, if it is one."""
    classes: list[type[EmakiError]] = [EmakiError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == name:
            return cls
        classes += cls.__subclasses__()
    return None


def save_input(image: Image.Image, folder: Path) -> Path:
    """Write an uploaded image as PNG under a fresh name, atomically (temp file, then rename)."""
    target = folder / f"{uuid.uuid4().hex}.png"
    try:
        with atomic_write(target) as tmp:
            image.save(tmp, format="PNG")
    except OSError as e:
        raise storage_error(f"could not keep the uploaded image in {folder}", e) from None
    return target


UPLOADED_FIELDS = ("init_image", "mask")  # the params that name an image a request sent


def uploaded_inputs(params: dict[str, Any]) -> list[Path]:
    """The uploads a job's params name (its init image, its inpainting mask)."""
    return [Path(params[field]) for field in UPLOADED_FIELDS if params.get(field)]


def remove_input(params: dict[str, Any], folder: Path) -> None:
    """Delete a job's uploaded init image and mask once the job has ended (only files
    `save_input` wrote into `folder`: a path from elsewhere is not the server's to delete)."""
    for path in uploaded_inputs(params):
        if path.resolve().parent == folder.resolve():
            path.unlink(missing_ok=True)


def sweep_inputs(folder: Path, needed: set[Path]) -> None:
    """At start-up: delete the uploads no waiting job needs (left by a crash, by a request refused
    after its image was written, or by jobs the restart cancelled), and cut-short writes."""
    if not folder.is_dir():
        return
    base, keep = folder.resolve(), {path.resolve() for path in needed}
    for entry in folder.iterdir():
        if base / entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # one that cannot go stays; the server still starts
                entry.unlink(missing_ok=True)


@dataclass
class Service:
    store: JobStore
    worker: Worker
    catalog: Catalog
    options: Options
    inputs: Path  # img2img images received, kept for their jobs (which may run after a restart)
    engine: Engine  # for what is not queued: creating an embedding or a hypernetwork
    styles_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one styles-file rewrite at a time

    def current_checkpoint(self) -> CheckpointEntry:
        """The `sd_model_checkpoint` setting, else the demo model, else the first one found."""
        chosen = self.options.get("sd_model_checkpoint")
        entries = self.catalog.checkpoints()
        if chosen:
            for entry in entries:
                if chosen in entry.names():
                    return entry
        from emaki.demo import demo_model_path

        demo = str(demo_model_path())
        for entry in entries:
            if entry.filename == demo:
                return entry
        if not entries:
            raise NameNotAllowed("no checkpoints found in the model folders, and the demo model is missing")
        return entries[0]

    def options_view(self) -> dict[str, Any]:
        """Every A1111 setting: the stored ones, the current checkpoint and this server's folders."""
        values = self.options.all() | output_folder_options(self.engine.workspace)
        current = self.current_checkpoint()
        return values | {"sd_model_checkpoint": current.title, "sd_checkpoint_hash": current.sha256}

    def checked_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """Settings as they will be stored: all refused (422) when one key is unknown or one
        value wrong; then names are looked up in the catalog."""
        checked = check_options(values, output_folder_options(self.engine.workspace))
        for key, value in checked.items():
            if key == "sd_model_checkpoint" and value is not None:
                checked[key] = self.catalog.find_checkpoint(str(value)).title
            elif key == "sd_vae":
                self.catalog.find_vae(str(value))
            elif key == "sd_hypernetwork":
                if value not in (None, "", "None"):
                    self.catalog.find_hypernetwork(str(value))
                checked[key] = value or "None"
        return checked

    def set_options(self, values: dict[str, Any]) -> None:
        self.options.update(self.checked_options(values))

    def prepare(self, fields: dict[str, Any], *, overrides: dict[str, Any] | None = None,
                init: Image.Image | None = None, mask: Image.Image | None = None) -> GenerationParams:
        """Fields a request set (model/VAE/hypernetwork by name), completed from the settings
        (and per-request `overrides` of them), with `init` as the img2img image and `mask` as its
        inpainting mask; raises ParamsError, NameNotAllowed, PolicyViolation."""
        for field in UPLOADED_FIELDS:  # a path would have the server open its own files
            if fields.get(field):
                raise NameNotAllowed(f"{field}: send the image itself, not a path")
        if mask is not None and init is None:
            raise ParamsError("mask: inpainting needs the image to repaint too (init_image)")
        settings = self.options.all() | self.checked_options(overrides or {})
        values = expand_speed(fields)  # a preset (`emaki generate --speed`) under the fields the request set
        if init is not None and not values.get("token_merging_ratio") and not (overrides or {}).get("token_merging_ratio"):
            # img2img: A1111's `token_merging_ratio_img2img` setting, when set, before `token_merging_ratio`
            values["token_merging_ratio"] = settings["token_merging_ratio_img2img"] or settings["token_merging_ratio"]
        for option, field in OPTION_FIELDS.items():
            values.setdefault(field, settings[option])
        if values.get("model"):
            checkpoint = self.catalog.find_checkpoint(str(values["model"]), "model")
        elif overrides and overrides.get("sd_model_checkpoint") is not None:
            checkpoint = self.catalog.find_checkpoint(settings["sd_model_checkpoint"])
        else:
            checkpoint = self.current_checkpoint()
        values["model"] = checkpoint.filename
        vae = values.get("vae") if values.get("vae") else settings["sd_vae"]
        values["vae"] = self.catalog.find_vae(str(vae), "vae")
        hypernetwork = values.get("hypernetwork") or settings["sd_hypernetwork"]
        values["hypernetwork"] = (None if hypernetwork in (None, "", "None")
                                  else self.catalog.find_hypernetwork(str(hypernetwork), "hypernetwork"))
        params = GenerationParams.create(**values)
        check_size_limits(params, init)
        parse_sampler_name(params.sampler_name, params.scheduler)  # an unknown name fails now, not in the queue
        ensure_params_allowed(params)  # every prompt field, whether or not its feature is on
        template = self.styled_prompts(params)  # an unknown style fails now, naming it
        ensure_params_allowed(params, [template])  # the prompts as the engine will make them
        for tag in extract_networks(template.prompt)[1]:  # a missing file fails now, not in the queue
            kind = kind_for_tag(tag.kind)
            if kind.name == "hypernetwork":
                self.catalog.find_hypernetwork(tag.name, "prompt")
            elif kind.name == "lora":
                self.catalog.find_lora(tag.name, "prompt")
        if params.enable_hr:
            check_upscaler(params.hr_upscaler, self.engine.workspace)
            if params.hr_sampler_name:
                parse_sampler_name(params.hr_sampler_name)
        if params.restore_faces:  # missing face files fail now, naming them, not in the queue
            self.engine.face_restoration.check(self.engine.workspace, "GFPGAN", "restore_faces")
        if init is not None:  # last: nothing is written for a request that is refused
            saved = {"init_image": save_input(init, self.inputs)}
            if mask is not None:
                try:
                    saved["mask"] = save_input(mask, self.inputs)
                except StorageError:
                    saved["init_image"].unlink(missing_ok=True)
                    raise
            params = params.updated(**{field: str(path) for field, path in saved.items()})
        return params

    def styles(self) -> dict[str, Style]:
        """The workspace's styles (its own file's, then the A1111 install's), read now: the
        page's editor and other tools change the files."""
        return read_styles(styles_files(self.engine.workspace))

    def styled_prompts(self, params: GenerationParams) -> ImagePrompt:
        """`params`' prompts with their styles applied, as the engine applies them before
        expanding wildcards (`emaki.engine.image_prompts`); `ParamsError` names an unknown style."""
        return styled(params, self.styles() if params.styles else {})

    def submit(self, params: GenerationParams, *, keep: bool = True) -> Job:
        """Queue checked params; a full disk is `StorageFull` (HTTP 507)."""
        check_size_limits(params)
        return self.store.submit(params.model_dump(), keep=keep)

    def plan_grid(self, params: GenerationParams, spec: GridSpec) -> GenerationParams:
        """Check an X/Y/Z plot before it is queued: every axis's values and names, every cell's
        params, size and prompts (`emaki.xyz.plan`, the prompt policy on each cell); raises
        `ParamsError`, `PolicyViolation`. Returns `params` with the seeds the grid fixed, so the
        queued grid runs the cells judged here."""
        from emaki.xyz.plan import plan_grid  # the grid code loads with the first grid

        plan = plan_grid(params, spec, self.engine.workspace)
        for cell in plan.cells:  # an axis (Size, hires) may make a cell larger than the params
            check_size_limits(cell.params)
        return plan.params

    def submit_grid(self, params: GenerationParams, spec: GridSpec, *, keep: bool = True) -> Job:
        """Queue a planned X/Y/Z plot as one `grid` job."""
        return self.store.submit({"params": params.model_dump(), "spec": spec.model_dump()}, keep=keep, kind="grid")

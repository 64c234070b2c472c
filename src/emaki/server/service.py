"""Between HTTP and the engine: turns request fields plus server settings into checked
`GenerationParams` and queues them. Both APIs (A1111's and the native one) go through here,
so the policy, the name checks and the settings apply the same way to every request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from emaki.engine.engine import Engine
from emaki.engine.hires import check_upscaler
from emaki.engine.networks import kind_for_tag
from emaki.engine.policy import ensure_params_allowed
from emaki.errors import EmakiError, ParamsError
from emaki.files import atomic_write
from emaki.jobs.store import Job, JobStore
from emaki.jobs.worker import Worker
from emaki.params import GenerationParams
from emaki.prompts import extract_networks
from emaki.sampling import parse_sampler_name
from emaki.server.catalog import Catalog, CheckpointEntry, NameNotAllowed
from emaki.server.options import Options, check_option


class ModelBusy(EmakiError):
    """What the request needs is held by a long run (a training job) (HTTP 409)."""


def error_status(error: EmakiError) -> int:
    """The HTTP status of an error a request caused."""
    if isinstance(error, ParamsError):
        return 422
    if isinstance(error, ModelBusy):
        return 409
    return 400  # policy refusals, names outside the folders, unreadable inputs


def save_input(image: Image.Image, folder: Path) -> Path:
    """Write an uploaded image as PNG under a fresh name, atomically (temp file, then rename)."""
    target = folder / f"{uuid.uuid4().hex}.png"
    with atomic_write(target) as tmp:
        image.save(tmp, format="PNG")
    return target


# Settings that fill a generation field the request did not set.
OPTION_FIELDS = {
    "CLIP_stop_at_last_layers": "clip_skip",
    "eta_noise_seed_delta": "eta_noise_seed_delta",
    "randn_source": "rng",
    "emphasis": "emphasis",
    "sd_hypernetwork_strength": "hypernetwork_strength",
}


@dataclass
class Service:
    store: JobStore
    worker: Worker
    catalog: Catalog
    options: Options
    inputs: Path  # img2img images received, kept for their jobs (which may run after a restart)
    engine: Engine  # for what is not queued: creating an embedding or a hypernetwork

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
        values = self.options.all()
        current = self.current_checkpoint()
        return values | {"sd_model_checkpoint": current.title, "sd_checkpoint_hash": current.sha256}

    def checked_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """Settings as they will be stored; names are looked up in the catalog."""
        checked: dict[str, Any] = {}
        for key, value in values.items():
            if key == "sd_model_checkpoint":
                entry = self.catalog.find_checkpoint(str(value))
                checked |= {key: entry.title, "sd_checkpoint_hash": entry.sha256}
            elif key == "sd_vae":
                self.catalog.find_vae(str(value))
                checked[key] = value
            elif key == "sd_hypernetwork":
                if value not in (None, "", "None"):
                    self.catalog.find_hypernetwork(str(value))
                checked[key] = value or "None"
            elif key in self.options.all():
                checked[key] = check_option(key, value)
        return checked

    def set_options(self, values: dict[str, Any]) -> None:
        self.options.update(self.checked_options(values))

    def prepare(self, fields: dict[str, Any], *, overrides: dict[str, Any] | None = None,
                init: Image.Image | None = None) -> GenerationParams:
        """Fields a request set (model/VAE/hypernetwork by name), completed from the settings
        (and per-request `overrides` of them), with `init` as the img2img image; raises
        ParamsError, NameNotAllowed, PolicyViolation."""
        if fields.get("init_image"):
            raise NameNotAllowed("init_image: send the image itself, not a path")
        settings = self.options.all() | self.checked_options(overrides or {})
        values = dict(fields)
        for option, field in OPTION_FIELDS.items():
            values.setdefault(field, settings[option])
        if values.get("model"):
            checkpoint = self.catalog.find_checkpoint(str(values["model"]), "model")
        elif overrides and "sd_model_checkpoint" in overrides:
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
        parse_sampler_name(params.sampler_name, params.scheduler)  # an unknown name fails now, not in the queue
        ensure_params_allowed(params)  # every prompt field, whether or not its feature is on
        for tag in extract_networks(params.prompt)[1]:  # a missing file fails now, not in the queue
            kind = kind_for_tag(tag.kind)
            if kind.name == "hypernetwork":
                self.catalog.find_hypernetwork(tag.name, "prompt")
            elif kind.name == "lora":
                self.catalog.find_lora(tag.name, "prompt")
        if params.enable_hr:
            check_upscaler(params.hr_upscaler)
            if params.hr_sampler_name:
                parse_sampler_name(params.hr_sampler_name)
        if init is not None:  # last: nothing is written for a request that is refused
            params = params.updated(init_image=str(save_input(init, self.inputs)))
        return params

    def submit(self, params: GenerationParams, *, keep: bool = True) -> Job:
        if params.width is not None and params.height is not None and params.width * params.height > 2048 * 2048:
            raise ParamsError(f"size: {params.width}x{params.height} is more than this server makes (2048x2048)")
        return self.store.submit(params.model_dump(), keep=keep)

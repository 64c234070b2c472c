"""Training through the server: request fields (native or A1111's) → checked `TrainingParams`,
queued as a 'train' job; and new embeddings and hypernetworks made on the engine.

A request names places on the server three times, each held to a rule: `data` (the images,
only read) must be an existing folder; `template` must be a shipped template (not a file);
`log_directory`, where the run writes, must lie under the server's home (a relative one is
taken from there, as A1111 takes its default "textual_inversion" from its own folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emaki.errors import ParamsError
from emaki.jobs.store import Job
from emaki.safety import ensure_allowed
from emaki.server.catalog import NameNotAllowed
from emaki.server.service import ModelBusy, Service
from emaki.training.params import TrainingKind, TrainingParams, sanitize_name
from emaki.training.templates import TEMPLATE_NAMES
from emaki.training.trainer import trained_file
from emaki.workspace import FolderKind

# Settings that fill a training field the request did not set (as A1111 trains with them).
TRAINING_OPTION_FIELDS = {"CLIP_stop_at_last_layers": "clip_skip", "emphasis": "emphasis"}
FOLDERS: dict[str, FolderKind] = {"embedding": "embeddings", "hypernetwork": "hypernetworks"}


def check_template(value: str) -> str:
    """A shipped template's name (`style_filewords` or A1111's `style_filewords.txt`)."""
    stem = value.strip().removesuffix(".txt")
    if stem not in TEMPLATE_NAMES:
        raise NameNotAllowed(f"template: {value!r} is not a template this server has "
                             f"(one of {', '.join(TEMPLATE_NAMES)})")
    return stem


def log_folder(home: Path, value: str) -> str:
    """`value` as a folder under `home` (relative: taken from `home`); anything else is refused."""
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else home / path).resolve()
    if not resolved.is_relative_to(home.resolve()):
        raise NameNotAllowed(f"log_directory: {value!r} is outside the server's home {home}; give a folder "
                             "under it (a relative name is taken from there)")
    return str(resolved)


def checked_name(name: str) -> str:
    """A1111's sanitised name, which must keep a letter or digit (".." would name a hidden file)."""
    clean = sanitize_name(name)
    if not any(c.isalnum() for c in clean):
        raise ParamsError(f"name: {name!r} has no letter or digit (A1111 keeps only letters, digits and ._- )")
    return clean


def new_file(service: Service, kind: TrainingKind, name: str, overwrite: bool) -> None:
    """Refuse to create over an existing file unless asked to (in the words of A1111's API)."""
    path = service.catalog.workspace.folders(FOLDERS[kind])[0] / f"{checked_name(name)}.pt"
    if path.exists() and not overwrite:
        raise ParamsError(f"name: {path} already exists; set overwrite_old to replace it")


def prepare_training(service: Service, fields: dict[str, Any], *, resume_existing: bool = False) -> TrainingParams:
    """Checked `TrainingParams` from request fields (the model by name, as `/api/models` lists
    it; the current checkpoint when none), completed from the settings. `resume_existing`
    (A1111's semantics): go on from the named file when it exists. Raises ParamsError,
    NameNotAllowed, PolicyViolation."""
    values = dict(fields)
    if isinstance(values.get("name"), str):
        checked_name(values["name"])
    settings = service.options.all()
    for option, field in TRAINING_OPTION_FIELDS.items():
        values.setdefault(field, settings[option])
    checkpoint = (service.catalog.find_checkpoint(str(values["model"]), "model") if values.get("model")
                  else service.current_checkpoint())
    values["model"] = checkpoint.filename
    if values.get("template"):
        values["template"] = check_template(str(values["template"]))
    if values.get("log_directory"):
        values["log_directory"] = log_folder(service.catalog.workspace.home, str(values["log_directory"]))
    params = TrainingParams.create(**values)
    for text in (params.name, params.preview_prompt, params.init_text):
        ensure_allowed(text)  # the captions are judged by the trainer, once it reads them
    data = Path(params.data).expanduser()
    if not data.is_dir():
        raise ParamsError(f"data: {params.data!r} is not a folder on the server (give the folder of training images)")
    update: dict[str, Any] = {"data": str(data.resolve())}
    if resume_existing and not params.overwrite and trained_file(service.engine, params).is_file():
        update["resume"] = True
    return params.model_copy(update=update)


def ensure_engine_free(service: Service) -> None:
    """Creating needs the engine, which a running training job holds until it ends: refuse
    rather than keep the request waiting for hours."""
    running = service.worker.progress().training
    if running is not None:
        raise ModelBusy(f"the {running.kind} {running.name!r} is training (step {running.step}/{running.total}) "
                        "and holds the model; create once it has ended, or cancel it")


def submit_training(service: Service, params: TrainingParams) -> Job:
    return service.store.submit(params.model_dump(mode="json"), kind="train")


def create_embedding(service: Service, name: str, *, init_text: str = "*", num_vectors_per_token: int = 1,
                     overwrite: bool = False) -> Path:
    """A new embedding for the current checkpoint, in emaki's embeddings folder."""
    ensure_allowed(init_text)  # the name is judged by the engine
    new_file(service, "embedding", name, overwrite)
    ensure_engine_free(service)
    return service.engine.create_embedding(name, init_text=init_text, num_vectors_per_token=num_vectors_per_token,
                                           model=service.current_checkpoint().filename, overwrite=overwrite)


def create_hypernetwork(service: Service, name: str, **options: Any) -> Path:
    """A new hypernetwork for the current checkpoint (`options`: `Engine.create_hypernetwork`'s)."""
    new_file(service, "hypernetwork", name, bool(options.get("overwrite")))
    ensure_engine_free(service)
    return service.engine.create_hypernetwork(name, model=service.current_checkpoint().filename, **options)

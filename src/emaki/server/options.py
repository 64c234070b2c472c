"""Server settings A1111 clients read and write through `/sdapi/v1/options`, kept in
`EMAKI_HOME/server-options.json` (written to a temp file, then renamed).

Every A1111 v1.10.1 setting is known (`a1111_options.py`), with its default; a POST may set any
of them (checked against its default's type) and is refused whole, naming the keys, when one is
unknown or wrong. emaki acts on the few in `OPTION_FIELDS` and on the model, VAE and
hypernetwork names (`service.Service`); the others are kept and returned, as A1111 keeps them. A
setting that fills a generation field is checked by that field's rule, when it is set and when
the file is read (a bad saved value is dropped, with a log line).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from emaki.errors import ParamsError
from emaki.files import atomic_write
from emaki.jobs.faults import storage_error
from emaki.params import GenerationParams, quotable
from emaki.server.a1111_options import A1111_OPTIONS, A1111_SECTIONS
from emaki.workspace import Workspace

log = logging.getLogger("emaki.server")

OPTIONS_FILE = "server-options.json"  # under EMAKI_HOME
# Where emaki's default differs from A1111's, or a setting A1111 no longer has.
EMAKI_OPTIONS: dict[str, Any] = {
    "randn_source": "CPU",  # the same picture on every device (A1111: "GPU")
    "sd_hypernetwork_strength": 1.0,  # removed from A1111 in 1.x; emaki still applies it
}
DEFAULTS: dict[str, Any] = A1111_OPTIONS | EMAKI_OPTIONS
# Settings that fill a generation field the request did not set.
OPTION_FIELDS = {
    "CLIP_stop_at_last_layers": "clip_skip",
    "eta_noise_seed_delta": "eta_noise_seed_delta",
    "randn_source": "rng",
    "emphasis": "emphasis",
    "sd_hypernetwork_strength": "hypernetwork_strength",
    "initial_noise_multiplier": "initial_noise_multiplier",
    "inpainting_mask_weight": "inpainting_mask_weight",
    "token_merging_ratio": "token_merging_ratio",
    "token_merging_ratio_hr": "token_merging_ratio_hr",
    "s_min_uncond": "s_min_uncond",  # A1111's "Negative Guidance minimum sigma"
    "s_min_uncond_all": "s_min_uncond_all",  # its "NGMS: Skip every step"
}
# Settings emaki acts on that fill a field only in some requests (`Service.prepare`: img2img's
# token merging), checked by that field's rule.
CHECKED_AS = {"token_merging_ratio_img2img": "token_merging_ratio"}
# Where emaki writes images is the workspace's: these report it and refuse another folder.
OUTPUT_FOLDER_OPTIONS = tuple(key for key in A1111_OPTIONS if key.startswith("outdir_"))
# Follows `sd_model_checkpoint` (as in A1111, which sets it when a model loads): never stored.
DERIVED_OPTIONS = frozenset({"sd_checkpoint_hash"})
# Null allowed besides the None defaults: no checkpoint hashed yet; A1111 clients send no
# hypernetwork as null.
NULLABLE_OPTIONS = DERIVED_OPTIONS | {"sd_hypernetwork"}
MAX_TEXT = 10_000  # characters of a text setting (A1111's longest default is a short pattern)
MAX_LISTED = 10  # unknown keys an error names
# Settings emaki acts on by name (the rest of `OPTION_FIELDS`' kind: they change a generation).
NAMED_OPTIONS = frozenset({"sd_model_checkpoint", "sd_vae", "sd_hypernetwork"})
EMAKI_SECTION = "emaki"  # settings A1111 does not have


def output_folder_options(workspace: Workspace) -> dict[str, str]:
    """The `outdir_*` settings as this server uses them: every image, grid and extras result
    goes under `outputs/<date>` of the workspace."""
    return {key: str(workspace.outputs) for key in OUTPUT_FOLDER_OPTIONS}


def check_options(values: dict[str, Any], folders: dict[str, str]) -> dict[str, Any]:
    """The settings of a POST (or `override_settings`) as they will be stored; `ParamsError`
    names every unknown key, else the first wrong value. Output folders and derived settings
    are checked, not stored."""
    unknown = [key for key in values if key not in DEFAULTS]
    if unknown:
        named = ", ".join(repr(quotable(key, 80)) for key in unknown[:MAX_LISTED])
        more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
        raise ParamsError(f"unknown settings: {named}{more} (expected keys of GET /sdapi/v1/options, "
                          "A1111 v1.10.1's settings); nothing was changed")
    checked = {}
    for key, value in values.items():
        stored = check_option(key, value)
        if key in folders:
            if stored not in ("", folders[key]):
                raise ParamsError(f"{key}: emaki writes images under {folders[key]} (set by EMAKI_HOME); "
                                  f"got {quotable(value)!r}")
        elif key not in DERIVED_OPTIONS:
            checked[key] = stored
    return checked


def check_option(key: str, value: Any) -> Any:
    """The value as stored; a wrong type, choice or range raises `ParamsError` naming the key
    (the rule of the generation field it fills, when it fills one; else its default's type, as
    A1111's `Options.same_type`, with int and float alike)."""
    field = OPTION_FIELDS.get(key) or CHECKED_AS.get(key)
    if field is not None:
        try:
            checked = GenerationParams.model_validate({field: value})
        except ValidationError as e:
            raise ParamsError(f"{key}: {e.errors()[0]['msg']} (got {quotable(value)!r})") from None
        return getattr(checked, field)
    expected = _expected_type(key)
    if not _has_type(value, expected):
        raise ParamsError(f"{key}: expected {expected}, got {quotable(value)!r}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ParamsError(f"{key}: at most {MAX_TEXT:,} characters, got {len(value):,}")
    return value


def _expected_type(key: str) -> str:
    default = DEFAULTS[key]
    if default is None or key in NULLABLE_OPTIONS:
        return "a string or null"
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int | float):
        return "a number"
    if isinstance(default, list):
        return "a list of strings"
    return "a string"


def _has_type(value: Any, expected: str) -> bool:
    if expected == "a string or null":
        return value is None or isinstance(value, str)
    if expected == "true or false":
        return isinstance(value, bool)
    if expected == "a number":
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and (isinstance(value, int) or math.isfinite(value)) and abs(value) < 2**63)
    if expected == "a list of strings":
        return (isinstance(value, list) and len(value) <= 1000
                and all(isinstance(item, str) and len(item) <= MAX_TEXT for item in value))
    return isinstance(value, str)


def options_schema() -> list[dict[str, Any]]:
    """Every setting as the web page's editor needs it, in A1111's order: `key`, `type` (bool,
    int, float, text, text-or-null, list: what `check_option` accepts), `default`, `section`
    (A1111's), `choices` (the values a generation field allows, else None: names of models are the
    listings'), `applied` (emaki acts on it) and `readonly` (the server sets it)."""
    sections = _sections()
    return [{"key": key, "type": _schema_type(key), "default": default,
             "section": sections.get(key, EMAKI_SECTION), "choices": _choices(key),
             "applied": key in OPTION_FIELDS or key in CHECKED_AS or key in NAMED_OPTIONS,
             "readonly": key in OUTPUT_FOLDER_OPTIONS or key in DERIVED_OPTIONS}
            for key, default in DEFAULTS.items()]


def _sections() -> dict[str, str]:
    """Each A1111 key's section: a section runs from its first key to the next one's."""
    starts = dict(A1111_SECTIONS)
    sections, title = {}, ""
    for key in A1111_OPTIONS:
        title = starts.get(key, title)
        sections[key] = title
    return sections


def _schema_type(key: str) -> str:
    expected = _expected_type(key)
    if expected == "a number":
        return "float" if isinstance(DEFAULTS[key], float) else "int"
    return {"a string or null": "text-or-null", "true or false": "bool", "a list of strings": "list"}.get(
        expected, "text")


def _choices(key: str) -> list[Any] | None:
    """The values of a `Literal` generation field the setting fills (`randn_source`, `emphasis`)."""
    if key not in OPTION_FIELDS:
        return None
    choices = get_args(GenerationParams.model_fields[OPTION_FIELDS[key]].annotation)
    return list(choices) or None


def checked_saved(path: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """The saved settings emaki knows, each as `check_option` takes it; a bad one is left out
    (its default stands) with a log line, so that one bad value cannot break every request."""
    values = {}
    for key, value in saved.items():
        if key not in DEFAULTS or key in DERIVED_OPTIONS or key in OUTPUT_FOLDER_OPTIONS:
            continue
        try:
            values[key] = check_option(key, value)
        except ParamsError as e:
            log.warning("%s: ignored %s; using the default %r", path, e, DEFAULTS[key])
    return values


class Options:
    """The settings, loaded at start and saved after every change (only those set: a default
    emaki changes later reaches a server whose file never set it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._set: dict[str, Any] = {}
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ParamsError(f"{path}: not a readable options file ({e}); fix or delete it") from None
            if not isinstance(saved, dict):
                raise ParamsError(f"{path}: expected a JSON object of settings; fix or delete it")
            self._set = checked_saved(path, saved)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._set.get(key, DEFAULTS[key])

    def all(self) -> dict[str, Any]:
        with self._lock:
            return DEFAULTS | self._set

    def update(self, values: dict[str, Any]) -> None:
        """Set known keys (values already checked by `check_options`) and save; nothing changes
        when the file cannot be written (`StorageError`, `StorageFull` for a full disk)."""
        with self._lock:
            updated = self._set | {k: v for k, v in values.items() if k in DEFAULTS}
            self._save(updated)
            self._set = updated

    def _save(self, values: dict[str, Any]) -> None:
        try:
            with atomic_write(self.path) as tmp, tmp.open("w", encoding="utf-8") as f:
                json.dump(values, f, indent=1)
        except OSError as e:
            raise storage_error(f"could not save the settings to {self.path}", e) from None

"""Server settings A1111 clients read and write through `/sdapi/v1/options`, kept in
`EMAKI_HOME/server-options.json` (written to a temp file, then renamed).

Only settings emaki acts on are listed; unknown keys in a POST are ignored, as A1111 does for
settings it does not have. A setting that fills a generation field is checked by that field's
rule, when it is set and when the file is read (a bad saved value is dropped, with a log line).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emaki.errors import ParamsError
from emaki.files import atomic_write
from emaki.jobs.faults import storage_error
from emaki.params import GenerationParams, quotable

log = logging.getLogger("emaki.server")

DEFAULTS: dict[str, Any] = {
    "sd_model_checkpoint": None,  # filled with the default checkpoint's title
    "sd_checkpoint_hash": None,
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "sd_vae": "Automatic",
    "sd_hypernetwork": "None",
    "sd_hypernetwork_strength": 1.0,
    "randn_source": "CPU",
    "emphasis": "Original",
    "samples_format": "png",
}
# Settings that fill a generation field the request did not set.
OPTION_FIELDS = {
    "CLIP_stop_at_last_layers": "clip_skip",
    "eta_noise_seed_delta": "eta_noise_seed_delta",
    "randn_source": "rng",
    "emphasis": "emphasis",
    "sd_hypernetwork_strength": "hypernetwork_strength",
}


def check_option(key: str, value: Any) -> Any:
    """The value as stored; a wrong type, choice or range raises `ParamsError` naming the key
    (the rule of the generation field it fills, when it fills one)."""
    if key in OPTION_FIELDS:
        field = OPTION_FIELDS[key]
        try:
            checked = GenerationParams.model_validate({field: value})
        except ValidationError as e:
            raise ParamsError(f"{key}: {e.errors()[0]['msg']} (got {quotable(value)!r})") from None
        return getattr(checked, field)
    if not isinstance(value, str) and value is not None:
        raise ParamsError(f"{key}: expected a string, got {quotable(value)!r}")
    return value


def checked_saved(path: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """The saved settings emaki knows, each as `check_option` takes it; a bad one is left out
    (its default stands) with a log line, so that one bad value cannot break every request."""
    values = {}
    for key, value in saved.items():
        if key not in DEFAULTS:
            continue
        try:
            values[key] = check_option(key, value) if key in OPTION_FIELDS else value
        except ParamsError as e:
            log.warning("%s: ignored %s; using the default %r", path, e, DEFAULTS[key])
    return values


class Options:
    """The settings, loaded at start and saved after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values = dict(DEFAULTS)
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ParamsError(f"{path}: not a readable options file ({e}); fix or delete it") from None
            if not isinstance(saved, dict):
                raise ParamsError(f"{path}: expected a JSON object of settings; fix or delete it")
            self._values.update(checked_saved(path, saved))

    def get(self, key: str) -> Any:
        with self._lock:
            return self._values[key]

    def all(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def update(self, values: dict[str, Any]) -> None:
        """Set known keys (values already checked by the caller) and save; nothing changes when
        the file cannot be written (`StorageError`, `StorageFull` for a full disk)."""
        with self._lock:
            updated = self._values | {k: v for k, v in values.items() if k in DEFAULTS}
            self._save(updated)
            self._values = updated

    def _save(self, values: dict[str, Any]) -> None:
        try:
            with atomic_write(self.path) as tmp, tmp.open("w", encoding="utf-8") as f:
                json.dump(values, f, indent=1)
        except OSError as e:
            raise storage_error(f"could not save the settings to {self.path}", e) from None

"""Server settings A1111 clients read and write through `/sdapi/v1/options`, kept in
`EMAKI_HOME/server-options.json` (written to a temp file, then renamed).

Only settings emaki acts on are listed; unknown keys in a POST are ignored, as A1111 does for
settings it does not have.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from emaki.errors import ParamsError
from emaki.files import atomic_write

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
CHOICES = {"randn_source": ("CPU", "GPU", "NV"), "emphasis": ("Original", "No norm", "Ignore", "None")}
NUMBERS = {"CLIP_stop_at_last_layers": int, "eta_noise_seed_delta": int, "sd_hypernetwork_strength": float}


def check_option(key: str, value: Any) -> Any:
    """The value as stored; a wrong type or choice raises `ParamsError` naming the key."""
    if key in NUMBERS:
        try:
            number = NUMBERS[key](value)
        except (TypeError, ValueError):
            raise ParamsError(f"{key}: expected a number, got {value!r}") from None
        if key == "CLIP_stop_at_last_layers" and not 1 <= number <= 12:
            raise ParamsError(f"{key}: expected 1..12, got {value!r}")
        if key == "eta_noise_seed_delta" and number < 0:
            raise ParamsError(f"{key}: expected 0 or more, got {value!r}")
        return number
    if key in CHOICES and value not in CHOICES[key]:
        raise ParamsError(f"{key}: expected one of {', '.join(CHOICES[key])}, got {value!r}")
    if not isinstance(value, str) and value is not None:
        raise ParamsError(f"{key}: expected a string, got {value!r}")
    return value


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
            self._values.update({k: v for k, v in saved.items() if k in DEFAULTS})

    def get(self, key: str) -> Any:
        with self._lock:
            return self._values[key]

    def all(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def update(self, values: dict[str, Any]) -> None:
        """Set known keys (values already checked by the caller) and save."""
        with self._lock:
            self._values.update({k: v for k, v in values.items() if k in DEFAULTS})
            self._save()

    def _save(self) -> None:
        with atomic_write(self.path) as tmp, tmp.open("w", encoding="utf-8") as f:
            json.dump(self._values, f, indent=1)

"""What a training run leaves beside the trained file: the loss log (CSV and a plot), A1111's
`.optim` optimizer sidecar, and the provenance record stored in the file."""

from __future__ import annotations

import csv
import datetime
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from emaki.errors import ModelLoadError, ParamsError
from emaki.files import atomic_write
from emaki.models.safe_load import load_pickle
from emaki.version import __version__

LOSS_FIELDS = ("step", "epoch", "epoch_step", "loss", "learn_rate")


@dataclass(frozen=True)
class LossRow:
    step: int
    epoch: int
    epoch_step: int
    loss: float
    learn_rate: float


def read_loss_csv(path: Path, *, up_to: int) -> list[LossRow]:
    """The rows of an earlier run's log with `step <= up_to` (what a resumed run continues)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                parsed = LossRow(int(row["step"]), int(row["epoch"]), int(row["epoch_step"]),
                                 float(row["loss"]), float(row["learn_rate"]))
            except (KeyError, TypeError, ValueError):
                continue  # a foreign or damaged line: the log is a record, not an input
            if parsed.step <= up_to:
                rows.append(parsed)
    return rows


def write_loss_csv(path: Path, rows: Sequence[LossRow]) -> Path:
    """The whole log, replaced atomically (A1111's columns: step, epoch, epoch_step, loss, learn_rate)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LOSS_FIELDS)
    for row in rows:
        writer.writerow([row.step, row.epoch, row.epoch_step, f"{row.loss:.7f}", f"{row.learn_rate:g}"])
    with atomic_write(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    return path


def plot_losses(path: Path, rows: Sequence[LossRow], title: str, size: tuple[int, int] = (640, 360)) -> Path | None:
    """A line plot of the loss and its running mean (window 32) per step; None without data."""
    points = [(r.step, r.loss) for r in rows if math.isfinite(r.loss)]
    if len(points) < 2:
        return None
    width, height = size
    left, right, top, bottom = 56, 16, 28, 32
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    lo, hi = min(losses), max(losses)
    hi = hi if hi > lo else lo + 1e-6
    first, last = steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1

    def xy(step: float, loss: float) -> tuple[float, float]:
        x = left + (step - first) / (last - first) * (width - left - right)
        y = top + (hi - loss) / (hi - lo) * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline=(180, 180, 180))
    draw.line([xy(s, v) for s, v in points], fill=(150, 170, 230), width=1)
    window = 32
    means = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
             for i in range(len(losses))]
    draw.line([xy(s, v) for s, v in zip(steps, means, strict=True)], fill=(20, 40, 160), width=2)
    draw.text((left, 8), f"{title}: loss per step (mean of {window})", fill="black")
    draw.text((4, top), f"{hi:.4f}", fill="black")
    draw.text((4, height - bottom - 10), f"{lo:.4f}", fill="black")
    draw.text((left, height - bottom + 8), str(first), fill="black")
    draw.text((width - right - 40, height - bottom + 8), str(steps[-1]), fill="black")
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")
    return path


# --- A1111's `.optim` sidecar ---

def optim_path(path: Path) -> Path:
    return path.with_name(path.name + ".optim")


def write_optim(path: Path, state: Mapping[str, Any], file_hash: str, optimizer_name: str | None = None) -> Path:
    """`<file>.optim`: `{"hash", "optimizer_state_dict"[, "optimizer_name"]}` as A1111 writes it."""
    data: dict[str, Any] = {"hash": file_hash, "optimizer_state_dict": dict(state)}
    if optimizer_name is not None:
        data["optimizer_name"] = optimizer_name
    target = optim_path(path)
    with atomic_write(target) as tmp:
        torch.save(data, tmp)
    return target


def read_optim(path: Path, expected_hash: str) -> dict[str, Any] | None:
    """The sidecar of `path` (restricted unpickling), or None when there is none; one written for
    other weights (its hash differs) is refused, as resuming with it would corrupt the run."""
    sidecar = optim_path(path)
    if not sidecar.is_file():
        return None
    data = load_pickle(sidecar)
    if not isinstance(data, dict) or not isinstance(data.get("optimizer_state_dict"), dict):
        raise ModelLoadError(f"{sidecar}: not an optimizer state (expected A1111's .optim layout)")
    if data.get("hash") != expected_hash:
        raise ParamsError(
            f"{sidecar}: its hash {data.get('hash')!r} does not match {path.name} ({expected_hash}); it was "
            "saved with other weights. Delete or move it to resume with a fresh optimizer state.")
    return data


def provenance(kind: str, params: Mapping[str, Any], *, model_name: str, model_hash: str | None,
               dataset_size: int, dataset_sha256: str, step: int) -> dict[str, Any]:
    """What emaki records in a trained file: enough to tell where it came from and redo it."""
    options = {k: v for k, v in params.items() if k not in ("resume", "overwrite", "log_directory")}
    return {
        "trainer": f"emaki {__version__}",
        "kind": kind,
        "base_model": model_name,
        "base_model_hash": model_hash,
        "dataset_size": dataset_size,
        "dataset_sha256": dataset_sha256,
        "step": step,
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": options,
    }

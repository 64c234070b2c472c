"""What a training run reports while it runs (`TrainingUpdate`) and when it ends (`TrainingOutcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrainingUpdate:
    """After each optimizer step (and on a roll-back): what a progress bar, an event stream or the
    web page's loss curve shows."""

    kind: str  # "embedding" | "hypernetwork"
    name: str
    step: int  # the file's step (A1111 counts from the step a resumed file was at)
    total: int  # the step the run goes up to
    loss: float  # mean over the step's micro-batches (NaN on a roll-back)
    learn_rate: float
    epoch: int
    epoch_step: int
    rollbacks: int = 0  # non-finite losses or gradients met so far (each halved the rate)
    saved: Path | None = None  # the file this step wrote (`<name>-<step>`), if any
    preview: Path | None = None  # the preview image this step drew, if any
    message: str | None = None  # a roll-back or a failed preview, in words


TrainingCallback = Callable[[TrainingUpdate], None]


@dataclass(frozen=True)
class TrainingOutcome:
    """How a run ended and where everything it made is."""

    kind: str
    name: str
    path: Path  # the trained file, in the workspace's embeddings/hypernetworks folder
    step: int  # the step the file is at
    total: int
    cancelled: bool
    final_loss: float | None
    rollbacks: int
    log_directory: Path
    loss_csv: Path
    loss_plot: Path | None
    previews: list[Path] = field(default_factory=list)
    saves: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "name": self.name, "path": str(self.path), "step": self.step,
            "total": self.total, "cancelled": self.cancelled, "final_loss": self.final_loss,
            "rollbacks": self.rollbacks, "log_directory": str(self.log_directory),
            "loss_csv": str(self.loss_csv), "loss_plot": str(self.loss_plot) if self.loss_plot else None,
            "previews": [str(p) for p in self.previews], "saves": [str(p) for p in self.saves],
            "messages": list(self.messages),
        }

"""What differs between the kinds of trained network: a `Trainee` holds the trained tensors, turns
captions into the UNet's context, and writes the file (embeddings and hypernetworks here, A1111's
layouts; LoRA in `training/lora.py`, kohya's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from emaki.errors import ParamsError
from emaki.models.hashes import sha256_file
from emaki.models.loader import LoadedModel
from emaki.networks import EmbeddingScan
from emaki.networks.embeddings import Embedding, save_embedding
from emaki.networks.hypernet_attention import apply_hypernetworks
from emaki.networks.hypernetworks import Hypernetwork, save_hypernetwork
from emaki.prompts import PromptEncoder
from emaki.training.artifacts import write_optim
from emaki.training.errors import TrainingError
from emaki.training.loop import all_finite


class Trainee(Protocol):
    """One kind of trained network, as the run sees it."""

    step: int  # the step the loaded or new network is at

    @property
    def parameters(self) -> list[torch.Tensor]: ...

    def optimizer(self, learn_rate: float) -> torch.optim.Optimizer: ...

    def context(self, texts: list[str]) -> torch.Tensor: ...

    def preview_embeddings(self, scan: EmbeddingScan) -> EmbeddingScan: ...

    def train_mode(self, training: bool) -> None: ...

    def save(self, path: Path, step: int, optimizer: torch.optim.Optimizer | None,
             record: dict[str, Any]) -> Path: ...

    def close(self) -> None: ...


def _guard_finite(tensors: list[torch.Tensor], path: Path) -> None:
    if not all_finite(tensors):
        raise TrainingError(f"{path}: not written, the weights are not finite (this is a bug: "
                            "the loop rolls back every non-finite step)")


@dataclass
class EmbeddingTrainee:
    """A textual-inversion embedding: its vectors are the only trained tensor."""

    name: str
    vectors: torch.Tensor
    encoder: PromptEncoder
    model: LoadedModel
    step: int = 0

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.vectors]

    def optimizer(self, learn_rate: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW([self.vectors], lr=learn_rate, weight_decay=0.0)

    def context(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.encode(texts)

    def preview_embeddings(self, scan: EmbeddingScan) -> EmbeddingScan:
        current = Embedding(self.name, self.vectors.detach().clone())
        return EmbeddingScan({**scan.loaded, self.name: current}, scan.skipped)

    def train_mode(self, training: bool) -> None:
        pass

    def embedding(self, step: int, record: dict[str, Any], name: str | None = None) -> Embedding:
        return Embedding(name or self.name, self.vectors.detach().float().cpu().clone(), step=step,
                         sd_checkpoint=self.model.hash, sd_checkpoint_name=self.model.name, provenance=record)

    def save(self, path: Path, step: int, optimizer: torch.optim.Optimizer | None,
             record: dict[str, Any]) -> Path:
        _guard_finite(self.parameters, path)
        embedding = self.embedding(step, record, path.stem)  # A1111 names a `<name>-<step>` save after itself
        save_embedding(embedding, path)
        if optimizer is not None:
            write_optim(path, optimizer.state_dict(), embedding.checksum())
        return path

    def close(self) -> None:
        pass


@dataclass
class HypernetworkTrainee:
    """A hypernetwork, installed on the UNet's attention layers for the run."""

    network: Hypernetwork
    encoder: PromptEncoder
    model: LoadedModel
    step: int = 0
    optimizer_name: str = "AdamW"
    _applied: Any = None
    _contexts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._applied = apply_hypernetworks(self.model.components.unet, [(self.network, 1.0)])
        for module in self.network.modules():
            module.requires_grad_(True)
        self.train_mode(True)

    @property
    def parameters(self) -> list[torch.Tensor]:
        # By width, as the file stores them: a network read back lists them in the same order.
        layers = self.network.layers
        return [p for size in sorted(layers) for module in layers[size] for p in module.parameters()]

    def optimizer(self, learn_rate: float) -> torch.optim.Optimizer:
        cls = getattr(torch.optim, self.optimizer_name, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ParamsError(f"hypernetwork {self.network.name}: its optimizer {self.optimizer_name!r} is not "
                              "a torch optimizer")
        return cls(self.parameters, lr=learn_rate)  # type: ignore[call-arg]  # every torch optimizer takes lr

    def context(self, texts: list[str]) -> torch.Tensor:
        # The text encoder is not trained: each caption is encoded once (without gradients).
        missing = [t for t in dict.fromkeys(texts) if t not in self._contexts]
        if missing:
            if len(self._contexts) > 4096:
                self._contexts.clear()
            with torch.no_grad():
                encoded = self.encoder.encode(missing)
            self._contexts.update(zip(missing, encoded, strict=True))
        return torch.stack([self._contexts[t] for t in texts])

    def preview_embeddings(self, scan: EmbeddingScan) -> EmbeddingScan:
        return scan

    def train_mode(self, training: bool) -> None:
        for module in self.network.modules():
            module.train(training)

    def save(self, path: Path, step: int, optimizer: torch.optim.Optimizer | None,
             record: dict[str, Any]) -> Path:
        _guard_finite(self.parameters, path)
        hn = self.network
        hn.name, hn.step = path.stem, step  # A1111 names a `<name>-<step>` save after itself
        hn.sd_checkpoint, hn.sd_checkpoint_name, hn.provenance = self.model.hash, self.model.name, record
        save_hypernetwork(hn, path)
        if optimizer is not None:
            write_optim(path, optimizer.state_dict(), sha256_file(path)[:10], self.optimizer_name)
        return path

    def close(self) -> None:
        self.train_mode(False)
        if self._applied is not None:
            self._applied.remove()
            self._applied = None

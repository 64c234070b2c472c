"""The values a generation is made of: what goes in (`Cancel`, the progress callback), what the
stages share (`Run`, `Batch`), what hooks into them (`Extension`), and what comes out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emaki.devices import DevicePolicy
from emaki.engine.image_prompts import ImagePrompt
from emaki.engine.patching import ModelHandle
from emaki.models.loader import LoadedModel
from emaki.params import GenerationParams
from emaki.prompts import PromptEmbedding, PromptEncoder
from emaki.prompts.networks import NetworkTag
from emaki.safety.embeddings import EmbeddingReadings
from emaki.sampling import Sampler
from emaki.sampling.denoiser import DiscreteEpsDenoiser
from emaki.sampling.progress import StepInfo


@dataclass(frozen=True)
class GenerationProgress:
    """One sampler step of one batch: what progress bars and previews are made of.
    `preview_map` takes latents to RGB (`emaki.engine.preview.preview_image`)."""

    batch: int
    batches: int
    step: int
    steps: int
    latent: torch.Tensor
    preview_map: np.ndarray | None = None
    # With a TAESD decoder (`preview.DecodedPreviews`): draws `latent` decoded, or None when no
    # decode is due; call it in the progress callback (the generation thread) or not at all.
    draw_preview: Callable[[], Image.Image | None] | None = None


ProgressCallback = Callable[[GenerationProgress], None]


@dataclass
class Cancel:
    """Set `interrupt` to stop the whole run (`Interrupted` is raised, the images finished so
    far are in the exception's `result`), `skip` to drop the batch being sampled (A1111's Skip;
    cleared when taken)."""

    interrupt: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None
    prompt: str = ""  # this image's prompts as made: styles applied, wildcards expanded
    negative_prompt: str = ""


@dataclass
class GenerationResult:
    params: GenerationParams  # as run: the seed resolved, the size filled in
    model: LoadedModel
    images: list[GeneratedImage] = field(default_factory=list)
    # Interrupted: the batch being sampled as far as it got (`emaki.engine.unfinished`), not written.
    unfinished: list[GeneratedImage] = field(default_factory=list)


@dataclass(frozen=True)
class Batch:
    index: int
    seeds: list[int]
    subseeds: list[int]


StepCallback = Callable[[StepInfo], None]


@dataclass
class Run:
    """Everything the stages of one generation share, planned once (`pipeline.plan`)."""

    params: GenerationParams
    handle: ModelHandle
    policy: DevicePolicy
    sampler: Sampler
    schedule: str
    prompt_text: str  # the prompt without its network tags
    tags: list[NetworkTag]
    denoiser: DiscreteEpsDenoiser
    sigmas: torch.Tensor
    start_sigma: torch.Tensor
    latent_shape: tuple[int, int, int]
    options: dict[str, float]  # sampler options (eta, s_noise)
    extensions: list[Extension]
    encoder: PromptEncoder | None = None
    conds: list = field(default_factory=list)
    unconds: list = field(default_factory=list)
    infotext_networks: dict[str, object] = field(default_factory=dict)
    embeddings: dict[str, PromptEmbedding] = field(default_factory=dict)  # bundled in the run's LoRAs
    readings: EmbeddingReadings = field(default_factory=EmbeddingReadings)  # the engine's, set by `plan`
    # Each image's prompts, batch after batch (A1111's `p.all_prompts`, ...), set by `plan`;
    # `conds`/`unconds` hold the batch whose (network-free) prompts `encoded` are.
    prompts: list[ImagePrompt] = field(default_factory=list)
    encoded: tuple[tuple[str, str], ...] = ()
    second_pass: bool = False  # the sampling pass under way is a hires fix's second pass (`stages.denoise`)

    @property
    def model(self) -> LoadedModel:
        return self.handle.model

    def batch_prompts(self, batch_index: int) -> list[ImagePrompt]:
        """The prompts of the images of one batch."""
        size = self.params.batch_size
        return self.prompts[batch_index * size:(batch_index + 1) * size]

    @property
    def schedule_steps(self) -> int:
        """Prompt-editing timelines count the sampler's model calls (2 per step for 2nd order)."""
        return self.params.steps * 2 if self.sampler.second_order else self.params.steps


class Extension:
    """A feature that changes a run (hires fix, img2img, networks, ...): one module, hooking
    into the stages. Every hook does nothing unless overridden."""

    def plan(self, run: Run) -> None:
        """Adjust the planned run (sigmas, start sigma) and check this feature's params."""

    def patch_model(self, run: Run, handle: ModelHandle) -> None:
        """Around the model: patch it through `handle` (undone when the run ends)."""

    def prepare(self, run: Run) -> None:
        """After the prompts are encoded, before the first batch."""

    def initial_latents(self, run: Run, batch: Batch) -> torch.Tensor | None:
        """The latents sampling starts from (img2img), or None for pure noise."""
        return None

    def initial_noise(self, run: Run, noise: torch.Tensor) -> torch.Tensor:
        """The noise a sampling pass starts from, drawn from the batch's seeds (img2img scales it)."""
        return noise

    def wrap_denoiser(self, run: Run, denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """Around the denoiser: `f(x, sigma) -> denoised` for this run."""
        return denoiser

    def after_step(self, run: Run, batch: Batch, step: StepInfo) -> None:
        """After each sampler step, before the progress callback."""

    def after_denoise(self, run: Run, batch: Batch, latents: torch.Tensor, on_step: StepCallback) -> torch.Tensor:
        """The batch's latents once sampled (a second pass goes here)."""
        return latents

    def after_decode(self, run: Run, batch: Batch, images: list[Image.Image]) -> list[Image.Image]:
        return images

    def infotext_fields(self, run: Run) -> dict[str, object]:
        return {}

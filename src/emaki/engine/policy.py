"""The prompt policy applied to a whole `GenerationParams`: every prompt field it holds,
whether or not the feature that reads it is switched on, judged at the CFG scale it runs at
(each image's own prompts, once styles and wildcards are expanded) — and, once the model is
loaded, the words the embeddings those prompts use encode."""

from __future__ import annotations

from collections.abc import Sequence

from emaki.engine.image_prompts import ImagePrompt
from emaki.engine.networks import BundledEmbedding
from emaki.models.loader import LoadedModel
from emaki.params import GenerationParams
from emaki.prompts import PromptEmbedding, PromptEncoder, extract_networks
from emaki.safety import ensure_generation_allowed
from emaki.safety.embeddings import (
    EmbeddingReadings,
    UsedEmbedding,
    ensure_embeddings_allowed,
    token_matrix,
)


def prompt_pairs(params: GenerationParams) -> list[tuple[str, str]]:
    """(prompt, negative prompt) of the first pass and of the hires pass (which defaults to the
    first pass's texts)."""
    return ImagePrompt.of(params).pairs()


def distinct(images: Sequence[ImagePrompt] | None, params: GenerationParams) -> list[ImagePrompt]:
    """Each image's prompts once (`params`' own when `images` is None)."""
    return list(dict.fromkeys(images)) if images is not None else [ImagePrompt.of(params)]


def ensure_params_allowed(params: GenerationParams, images: Sequence[ImagePrompt] | None = None) -> None:
    """Raise `PolicyViolation` when any prompt of `params` is refused — or, given `images`, any
    image's prompts as they are made (styles applied, wildcards expanded), each image judged on
    its own; below CFG 1 the negative prompts draw the picture too, and are judged as prompts."""
    for image in distinct(images, params):
        ensure_generation_allowed(image.pairs(), params.cfg_scale)


def described(embedding: PromptEmbedding) -> str:
    """How a refusal names an embedding: its file, or the LoRA file it is bundled in."""
    if isinstance(embedding, BundledEmbedding):
        return f'embedding "{embedding.name}" bundled in LoRA {embedding.source or embedding.shorthash}'
    path = getattr(embedding, "path", None)
    return f'embedding "{embedding.name}" ({path})' if path else f'embedding "{embedding.name}"'


def ensure_embeddings_allowed_in(params: GenerationParams, encoder: PromptEncoder, model: LoadedModel,
                                 readings: EmbeddingReadings, images: Sequence[ImagePrompt] | None = None) -> None:
    """Raise `PolicyViolation` when an embedding used by a prompt field of `params` — or of
    each of `images`, when given — (as `encoder` finds them: the folders', those bundled in the
    run's LoRAs) reads as refused words, alone or with the prompts (`emaki.safety.embeddings`);
    the negative prompts' only below CFG 1. Each embedding is read once per model (`readings`,
    the engine's)."""
    for image in distinct(images, params):
        _ensure_embeddings_allowed(image.pairs(), params.cfg_scale, encoder, model, readings)


def _ensure_embeddings_allowed(pairs: list[tuple[str, str]], cfg_scale: float, encoder: PromptEncoder,
                               model: LoadedModel, readings: EmbeddingReadings) -> None:
    in_prompts = encoder.embeddings_in([extract_networks(prompt)[0] for prompt, _ in pairs if prompt])
    in_negatives = encoder.embeddings_in([negative for _, negative in pairs if negative]) if not cfg_scale >= 1 else []
    if not in_prompts and not in_negatives:
        return
    parts = model.components
    matrix = token_matrix(parts.text_encoder)

    def used(embedding: PromptEmbedding) -> UsedEmbedding:
        reading = readings.read(embedding.vectors, matrix, parts.tokenizer, model=(model.source, model.hash))
        return UsedEmbedding(described(embedding), reading)

    positive_names = {embedding.name for embedding in in_prompts}
    ensure_embeddings_allowed(pairs, cfg_scale, [used(e) for e in in_prompts],
                              [used(e) for e in in_negatives if e.name not in positive_names])

"""The prompt policy applied to a whole `GenerationParams`: every prompt field it holds,
whether or not the feature that reads it is switched on, judged at the CFG scale it runs at —
and, once the model is loaded, the words the embeddings those prompts use encode."""

from __future__ import annotations

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
    pairs = [(params.prompt, params.negative_prompt)]
    if params.hr_prompt or params.hr_negative_prompt:
        pairs.append((params.hr_prompt or params.prompt, params.hr_negative_prompt or params.negative_prompt))
    return pairs


def ensure_params_allowed(params: GenerationParams) -> None:
    """Raise `PolicyViolation` when any prompt of `params` is refused; below CFG 1 the negative
    prompts draw the picture too, and are judged as prompts."""
    ensure_generation_allowed(prompt_pairs(params), params.cfg_scale)


def described(embedding: PromptEmbedding) -> str:
    """How a refusal names an embedding: its file, or the LoRA file it is bundled in."""
    if isinstance(embedding, BundledEmbedding):
        return f'embedding "{embedding.name}" bundled in LoRA {embedding.source or embedding.shorthash}'
    path = getattr(embedding, "path", None)
    return f'embedding "{embedding.name}" ({path})' if path else f'embedding "{embedding.name}"'


def ensure_embeddings_allowed_in(params: GenerationParams, encoder: PromptEncoder, model: LoadedModel,
                                 readings: EmbeddingReadings) -> None:
    """Raise `PolicyViolation` when an embedding used by a prompt field of `params` (as `encoder`
    finds them: the folders', those bundled in the run's LoRAs) reads as refused words, alone or
    with the prompts (`emaki.safety.embeddings`); the negative prompts' only below CFG 1. Each
    embedding is read once per model (`readings`, the engine's)."""
    pairs = prompt_pairs(params)
    in_prompts = encoder.embeddings_in([extract_networks(prompt)[0] for prompt, _ in pairs if prompt])
    in_negatives = encoder.embeddings_in([negative for _, negative in pairs if negative]) if not params.cfg_scale >= 1 else []
    if not in_prompts and not in_negatives:
        return
    parts = model.components
    matrix = token_matrix(parts.text_encoder)

    def used(embedding: PromptEmbedding) -> UsedEmbedding:
        reading = readings.read(embedding.vectors, matrix, parts.tokenizer, model=(model.source, model.hash))
        return UsedEmbedding(described(embedding), reading)

    positive_names = {embedding.name for embedding in in_prompts}
    ensure_embeddings_allowed(pairs, params.cfg_scale, [used(e) for e in in_prompts],
                              [used(e) for e in in_negatives if e.name not in positive_names])

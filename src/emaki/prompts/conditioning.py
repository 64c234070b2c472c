"""Prompts to conditioning over the sampling steps: editing, alternation and AND (specs §4.1-4.4).

`encode_prompts` follows A1111's order (§4.1): split on AND (with weights), schedule each
distinct sub-prompt, then encode all scheduled texts of one sub-prompt together. The engine
strips extra-network tags first (`extract_networks`) and passes `steps` already doubled for
second-order samplers (§4.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from emaki.errors import ParamsError
from emaki.prompts.composable import parse_and
from emaki.prompts.embedding_hook import PromptEmbedding
from emaki.prompts.encoder import PromptEncoder
from emaki.prompts.novelai import from_novelai
from emaki.prompts.schedule import prompt_schedules
from emaki.sampling.denoiser import stack_conds

DIALECTS = ("a1111", "novelai")


@dataclass
class ScheduledConditioning:
    """The conditioning of one (sub-)prompt over the steps: `[(end_at_step, cond), ...]`.

    Each `cond` is `(77*k, dim)`; all entries of one prompt have the same `k`.
    """

    prompt: str
    entries: list[tuple[int, torch.Tensor]]
    texts: list[str] = field(default_factory=list)
    embeddings: list[PromptEmbedding] = field(default_factory=list)  # used by any entry

    def at(self, step: int) -> torch.Tensor:
        """The cond for 0-based denoiser call `step`: the first entry with `step <= end_at_step`.

        Past the last boundary the *first* entry is used, as in A1111's
        `reconstruct_cond_batch` (its search starts from index 0 and keeps it when nothing
        matches).
        """
        for end_at_step, cond in self.entries:
            if step <= end_at_step:
                return cond
        return self.entries[0][1]

    def text_at(self, step: int) -> str:
        """The scheduled prompt text used at `step` (same rule as `at`)."""
        for (end_at_step, _), text in zip(self.entries, self.texts, strict=True):
            if step <= end_at_step:
                return text
        return self.texts[0]


@dataclass
class ComposableConditioning:
    """One image's positive prompt: AND parts with their weights (specs §4.4).

    Guidance (done by the engine): `uncond + Σ_i w_i · cfg · (cond_i − uncond)`.
    """

    parts: list[tuple[ScheduledConditioning, float]]

    @property
    def embeddings(self) -> list[PromptEmbedding]:
        """The embeddings any part uses, each once."""
        found: dict[str, PromptEmbedding] = {}
        for cond, _ in self.parts:
            for embedding in cond.embeddings:
                found.setdefault(embedding.name, embedding)
        return list(found.values())

    def at(self, step: int) -> tuple[torch.Tensor, list[float]]:
        """`(stacked conds (n_parts, tokens, dim), weights)` at `step`; see `stack_conds`."""
        return (
            stack_conds([cond.at(step) for cond, _ in self.parts]),
            [weight for _, weight in self.parts],
        )


def encode_prompts(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    steps: int,
    *,
    dialect: str = "a1111",
    old_timelines: bool = False,
) -> list[ComposableConditioning]:
    """One `ComposableConditioning` per prompt of the batch; identical sub-prompts share work."""
    cache: dict[str, ScheduledConditioning] = {}
    result = []
    for prompt in prompts:
        parts = []
        for text, weight in parse_and(to_a1111(prompt, dialect)):
            if text not in cache:
                cache[text] = _schedule_and_encode(encoder, text, steps, old_timelines)
            parts.append((cache[text], weight))
        result.append(ComposableConditioning(parts))
    return result


def encode_negative_prompts(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    steps: int,
    *,
    dialect: str = "a1111",
    old_timelines: bool = False,
) -> list[ScheduledConditioning]:
    """One `ScheduledConditioning` per negative prompt: editing and emphasis, but no AND."""
    cache: dict[str, ScheduledConditioning] = {}
    result = []
    for prompt in prompts:
        text = to_a1111(prompt, dialect)
        if text not in cache:
            cache[text] = _schedule_and_encode(encoder, text, steps, old_timelines)
        result.append(cache[text])
    return result


def to_a1111(prompt: str, dialect: str) -> str:
    """The prompt in A1111 syntax: unchanged for "a1111", converted for "novelai" (§4.8)."""
    if dialect == "a1111":
        return prompt
    if dialect == "novelai":
        return from_novelai(prompt)
    raise ParamsError(f"prompt dialect must be one of {', '.join(DIALECTS)}; got {dialect!r}")


def _schedule_and_encode(
    encoder: PromptEncoder, prompt: str, steps: int, old_timelines: bool
) -> ScheduledConditioning:
    schedule = prompt_schedules(prompt, steps, old_timelines=old_timelines)
    texts = [text for _, text in schedule]
    with torch.no_grad():
        conds = encoder.encode(texts)
    return ScheduledConditioning(
        prompt,
        [(end, cond) for (end, _), cond in zip(schedule, conds, strict=True)],
        texts,
        encoder.embeddings_in(texts),
    )

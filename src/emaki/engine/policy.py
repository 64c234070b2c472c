"""The prompt policy applied to a whole `GenerationParams`: every prompt field it holds,
whether or not the feature that reads it is switched on, judged at the CFG scale it runs at."""

from __future__ import annotations

from emaki.params import GenerationParams
from emaki.safety import ensure_generation_allowed


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

"""Each image's prompts (A1111's `p.all_prompts`, `all_negative_prompts`, `all_hr_prompts`):
the params' prompts with their styles applied (A1111 applies styles before anything else), then
their wildcards and variants expanded per image from the image's seed (the same seed, the same
choice). Made before the prompt policy judges them and before anything loads.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field

from emaki.errors import ParamsError
from emaki.params import MAX_PROMPT_LENGTH, GenerationParams
from emaki.prompts.networks import NetworkTag, extract_networks
from emaki.prompts.styles import Style, apply_styles, read_styles, styles_files
from emaki.prompts.wildcards import WildcardFiles, expand_prompt, is_template
from emaki.workspace import Workspace

# Infotext rows holding the templates the images' prompts were expanded from.
WILDCARD_PROMPT = "Wildcard prompt"
WILDCARD_NEGATIVE_PROMPT = "Wildcard negative prompt"


@dataclass(frozen=True)
class ImagePrompt:
    """The prompts one image is made from; the hires ones are empty where the hires pass uses
    the first pass's (as in `GenerationParams`)."""

    prompt: str
    negative_prompt: str
    hr_prompt: str = ""
    hr_negative_prompt: str = ""

    @classmethod
    def of(cls, params: GenerationParams) -> ImagePrompt:
        return cls(params.prompt, params.negative_prompt, params.hr_prompt, params.hr_negative_prompt)

    def pairs(self) -> list[tuple[str, str]]:
        """(prompt, negative prompt) of the first pass and of the hires pass, if it has its own."""
        pairs = [(self.prompt, self.negative_prompt)]
        if self.hr_prompt or self.hr_negative_prompt:
            pairs.append((self.hr_prompt or self.prompt, self.hr_negative_prompt or self.negative_prompt))
        return pairs

    def params_for(self, params: GenerationParams) -> GenerationParams:
        """`params` with this image's prompts (what its infotext records)."""
        if ImagePrompt.of(params) == self:
            return params
        return params.model_copy(update={"prompt": self.prompt, "negative_prompt": self.negative_prompt,
                                         "hr_prompt": self.hr_prompt, "hr_negative_prompt": self.hr_negative_prompt})


@dataclass(frozen=True)
class RunPrompts:
    """The prompts of every image of a run, batch after batch, and the infotext rows that
    record their templates."""

    images: list[ImagePrompt]
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def same(cls, params: GenerationParams, count: int) -> RunPrompts:
        """Every image with the params' own prompts (no styles, no wildcards)."""
        return cls([ImagePrompt.of(params)] * count)


def network_tags(images: Sequence[ImagePrompt]) -> tuple[str, list[NetworkTag]]:
    """The first image's prompt without its network tags, and the tags: the networks are
    applied once for the whole run, so every image's prompt must carry the same ones."""
    first, tags = extract_networks(images[0].prompt)
    for number, image in enumerate(images, 1):
        if image.prompt != images[0].prompt and extract_networks(image.prompt)[1] != tags:
            raise ParamsError(f"prompt: image {number}'s prompt ({image.prompt!r}) has other network tags than the "
                              f"first's ({images[0].prompt!r}): the networks of a run are the same for every image")
    return first, tags


def styled(params: GenerationParams, styles: Mapping[str, Style]) -> ImagePrompt:
    """The params' prompts with `params.styles` applied; the hires prompts only where set."""
    prompt, negative = apply_styles(params.prompt, params.negative_prompt, params.styles, styles)
    hr_prompt = apply_styles(params.hr_prompt, "", params.styles, styles)[0] if params.hr_prompt else ""
    hr_negative = (apply_styles("", params.hr_negative_prompt, params.styles, styles)[1]
                   if params.hr_negative_prompt else "")
    result = ImagePrompt(prompt, negative, hr_prompt, hr_negative)
    for name, text in zip(("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"), astuple(result)):
        if len(text) > MAX_PROMPT_LENGTH:
            raise ParamsError(f"{name}: with the styles applied it is {len(text):,} characters, more than "
                              f"{MAX_PROMPT_LENGTH:,}")
    return result


def expand_run_prompts(params: GenerationParams, seeds: Sequence[int], styles: Mapping[str, Style],
                       wildcards: WildcardFiles) -> RunPrompts:
    """Every image's prompts: `params`' styled prompts, with wildcards and variants expanded
    per image from its seed (`seeds`, one per image). The positive prompts (first pass and
    hires) draw from `random.Random(seed)`, so a hires prompt written as the prompt chooses as
    it does; the negative ones from their own generator."""
    template = styled(params, styles)
    texts = astuple(template)
    dynamic = [is_template(text) for text in texts]
    fields = {}
    if dynamic[0]:
        fields[WILDCARD_PROMPT] = template.prompt
    if dynamic[1]:
        fields[WILDCARD_NEGATIVE_PROMPT] = template.negative_prompt
    if not any(dynamic):
        return RunPrompts([template] * len(seeds), fields)

    def expanded(text: str, is_dynamic: bool, seed: int | str) -> str:
        return expand_prompt(text, random.Random(seed), wildcards) if is_dynamic else text

    made: dict[int, ImagePrompt] = {}  # a variation seed repeats one seed for every image
    for seed in seeds:
        if seed not in made:
            seeds_per_field: tuple[int | str, ...] = (seed, f"negative {seed}", seed, f"negative {seed}")
            made[seed] = ImagePrompt(*(expanded(text, is_dynamic, field_seed)
                                       for text, is_dynamic, field_seed in zip(texts, dynamic, seeds_per_field)))
    images = [made[seed] for seed in seeds]
    network_tags(images)  # refused now, before anything loads
    return RunPrompts(images, fields)


def workspace_run_prompts(params: GenerationParams, seeds: Sequence[int], workspace: Workspace) -> RunPrompts:
    """`expand_run_prompts` with the workspace's styles files and wildcard folders (the styles
    files are read only when the params name styles)."""
    styles = read_styles(styles_files(workspace)) if params.styles else {}
    return expand_run_prompts(params, seeds, styles, WildcardFiles(workspace.folders("wildcards")))

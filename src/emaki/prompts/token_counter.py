"""The token counter: how many CLIP tokens a prompt uses and where its chunks break (specs §4.5).

Counts as A1111's counter under the prompt box does: network tags stripped, AND split (for a
positive prompt), every scheduled variant tokenized, and the longest one reported against the
next multiple of 75. The CLI (`emaki tokens`) and the web page both call `count_tokens`.

>>> from emaki.models.tokenizer import load_clip_tokenizer
>>> count = count_tokens("masterpiece, 1girl, <hypernet:x:1> smile", load_clip_tokenizer())
>>> count.tokens, count.limit, [c.text for c in count.chunks]
(6, 75, ['masterpiece , 1 girl , smile'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emaki.models.tokenizer import BOS_ID, EOS_ID
from emaki.prompts.attention import parse_attention
from emaki.prompts.chunks import CHUNK_LENGTH, PLACEHOLDER_ID, Chunk, chunk_prompt
from emaki.prompts.composable import parse_and
from emaki.prompts.conditioning import to_a1111
from emaki.prompts.embedding_hook import EmbeddingLookup
from emaki.prompts.networks import extract_networks
from emaki.prompts.schedule import prompt_schedules


@dataclass(frozen=True)
class ChunkView:
    """One 75-token chunk as a person reads it: its real tokens and their text."""

    index: int
    tokens: int  # real tokens (not padding)
    text: str


@dataclass(frozen=True)
class TokenCount:
    """`tokens` of the longest scheduled variant, out of `limit` (a multiple of 75)."""

    tokens: int
    limit: int
    text: str  # the variant that was counted
    chunks: list[ChunkView]

    def summary(self) -> str:
        """One line, e.g. `80/150 tokens, 2 chunks`."""
        n = len(self.chunks)
        return f"{self.tokens}/{self.limit} tokens, {n} chunk{'s' if n != 1 else ''}"


def count_tokens(
    prompt: str,
    tokenizer: Any,
    *,
    steps: int = 20,
    negative: bool = False,
    dialect: str = "a1111",
    emphasis: str = "Original",
    comma_padding_backtrack: int = 20,
    embeddings: EmbeddingLookup | None = None,
) -> TokenCount:
    """Count `prompt`'s tokens like A1111's counter. A prompt whose emphasis cannot be read
    (`(a:1.2.3)`) raises `PromptError`, as generating with it would."""
    text, _ = extract_networks(prompt)
    text = to_a1111(text, dialect)
    parts = [text] if negative else [part for part, _ in parse_and(text)]
    variants = [v for part in parts for _, v in prompt_schedules(part, steps)]

    best: tuple[int, str, list[Chunk]] | None = None
    for variant in dict.fromkeys(variants):
        parsed = [(variant, 1.0)] if emphasis == "None" else parse_attention(variant)
        chunks, count = chunk_prompt(
            parsed,
            tokenizer,
            embeddings=embeddings,
            comma_padding_backtrack=comma_padding_backtrack,
        )
        if best is None or count > best[0]:
            best = (count, variant, chunks)
    assert best is not None
    count, variant, chunks = best
    limit = math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH
    return TokenCount(count, limit, variant, [_view(i, c, tokenizer) for i, c in enumerate(chunks)])


def _view(index: int, chunk: Chunk, tokenizer: Any) -> ChunkView:
    body = chunk.token_ids[1:-1]
    while body and body[-1] == EOS_ID:
        body = body[:-1]
    names = {fix.offset: fix.embedding for fix in chunk.fixes}
    pieces: list[str] = []
    run: list[int] = []
    i = 0
    while i < len(body):
        if body[i] == PLACEHOLDER_ID and i in names:
            if run:
                pieces.append(_decode(run, tokenizer))
                run = []
            embedding = names[i]
            pieces.append(f"<{embedding.name}>")
            i += int(embedding.vectors.shape[0])
            continue
        if body[i] != BOS_ID:
            run.append(body[i])
        i += 1
    if run:
        pieces.append(_decode(run, tokenizer))
    return ChunkView(index, len(body), " ".join(p for p in pieces if p))


def _decode(ids: list[int], tokenizer: Any) -> str:
    return str(tokenizer.decode(ids)).strip()

"""75-token chunks: BOS + 75 tokens + EOS per chunk, comma back-off, BREAK (specs §4.5).

>>> from emaki.models.tokenizer import load_clip_tokenizer
>>> chunks = tokenize_chunks([("a cat", 1.0), ("smiling", 1.1)], load_clip_tokenizer())
>>> len(chunks), chunks[0].token_ids[:5], chunks[0].multipliers[:5], len(chunks[0].token_ids)
(1, [49406, 320, 2368, 9200, 49407], [1.0, 1.0, 1.0, 1.1, 1.0], 77)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from emaki.errors import PromptError
from emaki.models.tokenizer import BOS_ID, COMMA_ID, EOS_ID, tokenizable
from emaki.prompts.attention import BREAK_MARKER
from emaki.prompts.embedding_hook import EmbeddingLookup, PromptEmbedding

CHUNK_LENGTH = 75
PLACEHOLDER_ID = 0  # token id written where an embedding's vectors go


@dataclass(frozen=True)
class EmbeddingFix:
    """Embedding vectors replace the token embeddings at `offset + 1 ...` (+1 for BOS)."""

    offset: int
    embedding: PromptEmbedding


@dataclass
class Chunk:
    """One CLIP input: 77 token ids, 77 multipliers, and the embeddings to inject."""

    token_ids: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[EmbeddingFix] = field(default_factory=list)


def empty_chunk() -> Chunk:
    """BOS + 76 EOS: the chunk of an empty prompt, and the filler for missing chunks."""
    return Chunk([BOS_ID] + [EOS_ID] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


def tokenize_chunks(
    texts_with_weights: Sequence[tuple[str, float]],
    tokenizer: Any,
    *,
    embeddings: EmbeddingLookup | None = None,
    comma_padding_backtrack: int = 20,
) -> list[Chunk]:
    """Chunks of the parsed prompt `texts_with_weights` (output of `parse_attention`).

    >>> from emaki.models.tokenizer import load_clip_tokenizer
    >>> tok = load_clip_tokenizer()
    >>> [c.token_ids[:3] for c in tokenize_chunks([("a", 1.0), ("BREAK", -1.0), ("b", 1.0)], tok)]
    [[49406, 320, 49407], [49406, 321, 49407]]
    >>> len(tokenize_chunks([("", 1.0)], tok))
    1
    """
    return chunk_prompt(
        texts_with_weights,
        tokenizer,
        embeddings=embeddings,
        comma_padding_backtrack=comma_padding_backtrack,
    )[0]


def chunk_prompt(
    texts_with_weights: Sequence[tuple[str, float]],
    tokenizer: Any,
    *,
    embeddings: EmbeddingLookup | None = None,
    comma_padding_backtrack: int = 20,
) -> tuple[list[Chunk], int]:
    """`(chunks, token_count)`, where `token_count` = 75 per closed chunk + the last one's
    real tokens (what A1111's counter shows). Quirks kept from the reference (specs §4.5):

    * BREAK closes the current chunk even when it is empty (a whole chunk of padding).
    * Comma back-off happens when a chunk is full and the next token is not a comma; a comma
      that itself arrives at a full chunk starts the next chunk but is not remembered there.
    * Embedding fixes are not moved by the comma back-off: a fix in the moved tail stays with
      the old chunk (its vectors land on padding) and the new chunk keeps placeholder ids 0.
    """
    fragments = [tokenizable(text) for text, _ in texts_with_weights]
    token_lists = (
        tokenizer(fragments, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
        if fragments
        else []
    )

    chunks: list[Chunk] = []
    chunk = Chunk()
    token_count = 0
    last_comma = -1

    def close_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.token_ids) if is_last else CHUNK_LENGTH
        padding = CHUNK_LENGTH - len(chunk.token_ids)
        if padding > 0:
            chunk.token_ids += [EOS_ID] * padding
            chunk.multipliers += [1.0] * padding
        chunk.token_ids = [BOS_ID, *chunk.token_ids, EOS_ID]
        chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = Chunk()

    for ids, (text, weight) in zip(token_lists, texts_with_weights, strict=True):
        if text == BREAK_MARKER and weight == -1:
            close_chunk()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == COMMA_ID:
                last_comma = len(chunk.token_ids)
            elif (
                comma_padding_backtrack != 0
                and len(chunk.token_ids) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.token_ids) - last_comma <= comma_padding_backtrack
            ):
                cut = last_comma + 1
                moved_ids, moved_mults = chunk.token_ids[cut:], chunk.multipliers[cut:]
                del chunk.token_ids[cut:], chunk.multipliers[cut:]
                close_chunk()
                chunk.token_ids, chunk.multipliers = moved_ids, moved_mults

            if len(chunk.token_ids) == CHUNK_LENGTH:
                close_chunk()

            found = embeddings.find_at(ids, position) if embeddings is not None else None
            if found is None:
                chunk.token_ids.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue

            embedding, name_length = found
            n_vectors = int(embedding.vectors.shape[0])
            if n_vectors > CHUNK_LENGTH:
                raise PromptError(
                    f"embedding {embedding.name!r} has {n_vectors} vectors; "
                    f"at most {CHUNK_LENGTH} fit in one chunk"
                )
            if len(chunk.token_ids) + n_vectors > CHUNK_LENGTH:
                close_chunk()
            chunk.fixes.append(EmbeddingFix(len(chunk.token_ids), embedding))
            chunk.token_ids += [PLACEHOLDER_ID] * n_vectors
            chunk.multipliers += [weight] * n_vectors
            position += name_length

    if chunk.token_ids or not chunks:
        close_chunk(is_last=True)
    return chunks, token_count

"""Where textual-inversion embeddings plug into prompt encoding (specs §3.4).

The chunker asks an `EmbeddingLookup`, at every token position of every parsed fragment,
whether an embedding's name starts there; matching is on CLIP token ids, so it is
case-insensitive and tolerant of punctuation. `EmbeddingTable` is a small ready-made lookup
built from `{name: vectors}`; the embeddings loader may use it or supply its own.

>>> import torch
>>> from emaki.models.tokenizer import load_clip_tokenizer
>>> table = EmbeddingTable({"easynegative": torch.zeros(8, 768)}, load_clip_tokenizer())
>>> found = table.find_at([18308, 8869, 267], 0)
>>> found[0].name, found[1]
('easynegative', 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from emaki.models.tokenizer import tokenizable


@runtime_checkable
class PromptEmbedding(Protocol):
    """A textual-inversion embedding as prompt encoding sees it."""

    @property
    def name(self) -> str: ...

    @property
    def vectors(self) -> torch.Tensor:
        """`(n_vectors, width)`; `width` must be the text encoder's hidden size."""
        ...


class EmbeddingLookup(Protocol):
    """Finds the embedding whose name's token ids start at `token_ids[position]`."""

    def find_at(
        self, token_ids: Sequence[int], position: int
    ) -> tuple[PromptEmbedding, int] | None:
        """`(embedding, number of prompt tokens its name covers)`, or None."""
        ...


@dataclass(frozen=True)
class NamedVectors:
    """The simplest `PromptEmbedding`: a name and its vectors."""

    name: str
    vectors: torch.Tensor


class EmbeddingTable:
    """An `EmbeddingLookup` over `{name: vectors}`, matching as A1111 does (specs §3.4).

    Each name is tokenized without BOS/EOS; candidates are indexed by their first token id
    and tried longest first.
    """

    def __init__(self, embeddings: Mapping[str, torch.Tensor | PromptEmbedding], tokenizer: Any):
        self._by_first_id: dict[int, list[tuple[list[int], PromptEmbedding]]] = {}
        for name, value in embeddings.items():
            embedding = value if isinstance(value, PromptEmbedding) else NamedVectors(name, value)
            if embedding.vectors.ndim == 1:
                embedding = NamedVectors(embedding.name, embedding.vectors.unsqueeze(0))
            ids = list(
                tokenizer([tokenizable(name)], truncation=False, add_special_tokens=False)["input_ids"][0]
            )
            if not ids:
                continue
            candidates = self._by_first_id.setdefault(ids[0], [])
            candidates.append((ids, embedding))
            candidates.sort(key=lambda c: len(c[0]), reverse=True)  # stable: first registered wins

    def find_at(
        self, token_ids: Sequence[int], position: int
    ) -> tuple[PromptEmbedding, int] | None:
        for ids, embedding in self._by_first_id.get(token_ids[position], ()):
            if list(token_ids[position : position + len(ids)]) == ids:
                return embedding, len(ids)
        return None

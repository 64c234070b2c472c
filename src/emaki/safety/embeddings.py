"""Embeddings that smuggle words: the policy reads an embedding's vectors as the words they copy.

A textual-inversion embedding replaces its name in the prompt by its vectors, which go where
token embeddings go. Vectors copied from the text encoder's own token-embedding matrix therefore
*are* those words to the model: an embedding called ``red_hair`` holding the rows for "child
nude" draws, pixel for pixel, what "child nude" draws, while the prompt text only says
``red_hair``. So each vector is compared with every vocabulary row (cosine similarity, which a
scaled copy does not change), the rows it is a close copy of are decoded to words — consecutive
vectors together, as CLIP reads glued pieces — and the prompt policy judges those words: alone
(`reads_refused`), and joined to the prompts the embedding is used in, so that an embedding of
"child" in a prompt saying "nude" is refused too (`ensure_embeddings_allowed`). As for prompt
text, an embedding used only in the negative prompt at ``cfg_scale`` ≥ 1 steers away from its
content and is not judged (see `emaki.safety`).

Not detected: vectors that steer toward the same content without being close to any token
(trained by gradient descent toward refused images): that is content, not smuggled words, and
no reading of the vectors alone can tell it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emaki.errors import PolicyViolation
from emaki.safety import _WHY, Verdict, check_prompt
from emaki.safety.token_text import writings

__all__ = ["EmbeddingReading", "EmbeddingReadings", "TokenMatch", "UsedEmbedding", "ensure_embeddings_allowed",
           "ensure_trained_embedding_allowed", "read_embedding", "reads_refused", "similarity_threshold",
           "token_matrix"]

# How close a vector must be to a token's row to read as that token. Measured on the demo
# model (width 128, 49 408 tokens) and on a random-init tiny model (width 32): the closest row
# to a random vector has cosine ~0.36 (max 0.46 in 2 000) at width 128, and ~0.66 (max 0.85) at
# width 32 — chance grows as the width shrinks, about sqrt(2 ln V / width) for V tokens (the
# largest of V near-normal similarities of spread 1/sqrt(width)); at width 768 (SD 1.x) it is
# ~0.17. Embeddings trained 60 steps on the demo model (rate 0.005 or 0.05, from "*" or
# "animal ears") are at most 0.39-0.49 from any row. A copy plus noise of relative size e has
# cosine 1/sqrt(1 + e²): 0.96 for e = 0.3, 0.89 for 0.5, 0.71 for 1.0 (noise as large as the
# vector, still the nearest row at width 128 every time). So the threshold is 0.7 — copies with
# noise up to the vector's own size still read as their words — raised to chance + 0.1 where the
# width makes chance that high (0.92 at width 32), so random and trained vectors read as
# nothing, and capped at 0.99 so exact and scaled copies always read.
_FLOOR = 0.7
_ABOVE_CHANCE = 0.1
_CEILING = 0.99
_CANDIDATES = 3  # tokens kept per vector: a vector may sit close to a few rows at once
_ROWS_AT_ONCE = 8192  # vocabulary rows compared per matrix product (bounds the memory used)


def similarity_threshold(width: int, vocabulary: int = 49408) -> float:
    """The cosine similarity from which a vector of `width` reads as a token (see above).

    >>> similarity_threshold(768), similarity_threshold(128), round(similarity_threshold(32), 3)
    (0.7, 0.7, 0.922)
    """
    chance = math.sqrt(2 * math.log(max(vocabulary, 2)) / max(width, 1))
    return min(_CEILING, max(_FLOOR, chance + _ABOVE_CHANCE))


@dataclass(frozen=True)
class TokenMatch:
    """Vector `vector` of an embedding is a close copy of vocabulary row `token_id` (`word`)."""

    vector: int
    token_id: int
    word: str
    similarity: float


@dataclass(frozen=True)
class EmbeddingReading:
    """What an embedding's vectors read as: its `matches` (best first for each vector) and `texts`,
    the words they are written as (none when no vector is close to a token)."""

    matches: tuple[TokenMatch, ...]
    texts: tuple[str, ...]  # the ways of writing it (`emaki.safety.token_text`), tight first

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    @property
    def similarity(self) -> float:
        """The lowest similarity among the matches (how close the copy is, for messages)."""
        return min((m.similarity for m in self.matches), default=0.0)


def token_matrix(text_encoder: Any) -> torch.Tensor:
    """The `(vocabulary, width)` token-embedding matrix of a transformers text encoder."""
    weight = text_encoder.get_input_embeddings().weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(text_encoder).__name__} has no token-embedding matrix")
    return weight


def _nearest_rows(vectors: torch.Tensor, token_embeddings: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, row ids), each `(n_vectors, count)`, best first: cosine similarity of each
    vector with every row, `_ROWS_AT_ONCE` rows at a time."""
    matrix = token_embeddings.detach()
    unit = torch.nn.functional.normalize(vectors.detach().to(matrix.device, torch.float32), dim=1)
    best_values, best_ids = [], []
    for start in range(0, matrix.shape[0], _ROWS_AT_ONCE):
        rows = torch.nn.functional.normalize(matrix[start : start + _ROWS_AT_ONCE].float(), dim=1)
        similarity = torch.nan_to_num(unit @ rows.T, nan=-1.0)  # a NaN vector reads as nothing
        values, ids = similarity.topk(min(count, similarity.shape[1]), dim=1)
        best_values.append(values)
        best_ids.append(ids + start)
    values, order = torch.cat(best_values, dim=1).topk(count, dim=1)
    return values.cpu(), torch.cat(best_ids, dim=1).gather(1, order).cpu()


def read_embedding(vectors: torch.Tensor, token_embeddings: torch.Tensor, tokenizer: Any,
                   threshold: float | None = None) -> EmbeddingReading:
    """The words `vectors` (`(n, width)`) are close copies of, among the rows of `token_embeddings`
    (the text encoder's `(vocabulary, width)` matrix), decoded with `tokenizer`; `threshold`
    defaults to `similarity_threshold` for the matrix's shape."""
    vectors = vectors.reshape(-1, vectors.shape[-1])
    if vectors.shape[0] == 0 or vectors.shape[-1] != token_embeddings.shape[-1]:
        return EmbeddingReading((), ())  # a width this model cannot use: the encoder never reads it
    vocabulary, width = token_embeddings.shape
    threshold = similarity_threshold(width, vocabulary) if threshold is None else threshold
    special = set(getattr(tokenizer, "all_special_ids", ()))
    with torch.no_grad():
        values, ids = _nearest_rows(vectors, token_embeddings, min(_CANDIDATES, vocabulary))
    best: list[TokenMatch | None] = []
    others: list[TokenMatch] = []
    for vector, (row_values, row_ids) in enumerate(zip(values.tolist(), ids.tolist(), strict=True)):
        close = [TokenMatch(vector, token, tokenizer.decode([token]).strip(), value)
                 for value, token in zip(row_values, row_ids, strict=True)
                 if value >= threshold and token not in special]
        best.append(close[0] if close else None)
        others += close[1:]
    return EmbeddingReading(tuple(m for m in best if m is not None) + tuple(others),
                            _decoded(best, others, tokenizer))


def _decoded(best: list[TokenMatch | None], others: list[TokenMatch], tokenizer: Any) -> tuple[str, ...]:
    """Each way of writing what the vectors read as (`writings`): runs of consecutive vectors
    written together, runs and the other close tokens as separate tags."""
    runs: list[list[int]] = [[]]
    for match in best:
        if match is None:
            runs.append([])
        else:
            runs[-1].append(match.token_id)
    written = [writings(run, tokenizer) for run in runs if run]
    styles = len(written[0]) if written else 0
    texts = (", ".join([*(w[style] for w in written), *(m.word for m in others)]) for style in range(styles))
    return tuple(dict.fromkeys(texts))


def _judge(reading: EmbeddingReading) -> Verdict:
    """The first refusal among the ways of writing the reading, else allowed."""
    for text in reading.texts:
        verdict = check_prompt(text)
        if not verdict.allowed:
            return verdict
    return Verdict(allowed=True)


def reads_refused(reading: EmbeddingReading) -> bool:
    """Whether the words an embedding reads as are refused by the prompt policy on their own."""
    return not _judge(reading).allowed


def _digest(vectors: torch.Tensor) -> str:
    data = vectors.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(repr(tuple(data.shape)).encode() + data.numpy().tobytes()).hexdigest()


class EmbeddingReadings:
    """Readings remembered by (the vectors' content, the model), most recent last: an engine holds
    one, so each embedding is read once per model however many runs use it. The key is the
    vectors' sha256 rather than the file's, so an embedding bundled in a LoRA, or one being
    trained, is remembered the same way and a changed file is read again."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, Hashable], EmbeddingReading] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def read(self, vectors: torch.Tensor, token_embeddings: torch.Tensor, tokenizer: Any, *,
             model: Hashable) -> EmbeddingReading:
        """`read_embedding`, or what it gave before for these vectors and `model`."""
        key = (_digest(vectors), model)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        reading = read_embedding(vectors, token_embeddings, tokenizer)
        self._items[key] = reading
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return reading


@dataclass(frozen=True)
class UsedEmbedding:
    """An embedding a generation uses: how messages name it, and what it reads as."""

    described: str  # `embedding "red_hair" (/path/red_hair.safetensors)`
    reading: EmbeddingReading


def _quoted(terms: Iterable[str], limit: int = 4) -> str:
    listed = list(dict.fromkeys(terms))
    shown = ", ".join(f'"{t}"' for t in listed[:limit])
    return shown + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


def _encodes(reading: EmbeddingReading) -> str:
    return (f"its vectors are copies of this model's own token vectors for \"{reading.text}\" (cosine "
            f"similarity {reading.similarity:.2f})")


def ensure_embeddings_allowed(pairs: Sequence[tuple[str, str]], cfg_scale: float,
                              positive: Sequence[UsedEmbedding], negative: Sequence[UsedEmbedding]) -> None:
    """Raise `PolicyViolation` when an embedding that steers the image reads as refused words, or
    when the words it reads as make the generation's prompts refused. `pairs` are the (prompt,
    negative prompt) of every pass, already allowed on their own; `positive` are the embeddings
    any prompt uses, `negative` those only negative prompts use (judged below CFG 1 only)."""
    steering = [*positive, *(negative if not cfg_scale >= 1 else ())]
    for used in steering:
        verdict = _judge(used.reading)
        if not verdict.allowed:
            raise PolicyViolation(f"Refused: {used.described} encodes refused words: {_encodes(used.reading)}, "
                                  f"which the prompt policy refuses ({_quoted(verdict.matches)}). {_WHY}")
    reading = [used for used in steering if used.reading.texts]
    for style in range(max((len(used.reading.texts) for used in reading), default=0)):
        prompt = ", ".join([*(p for p, _ in pairs if p), *(_written(u, style) for u in positive if u.reading.texts)])
        negatives = ", ".join([*(n for _, n in pairs if n), *(_written(u, style) for u in negative if u.reading.texts)])
        verdict = check_prompt(prompt, negatives, cfg_scale=cfg_scale)
        if not verdict.allowed:
            words = "; ".join(f"{u.described} encodes \"{_written(u, style)}\"" for u in reading)
            raise PolicyViolation(f"Refused: the prompt together with the words its embeddings encode ({words}) is "
                                  f"refused ({_quoted(verdict.matches)}). {_WHY}")


def _written(used: UsedEmbedding, style: int) -> str:
    """One way of writing what `used` reads as (its last when it has fewer: they were equal)."""
    texts = used.reading.texts
    return texts[min(style, len(texts) - 1)]


def ensure_trained_embedding_allowed(name: str, step: int, reading: EmbeddingReading,
                                     captions: Iterable[tuple[str, str]] = ()) -> None:
    """Raise `PolicyViolation` when a trained embedding reads as refused words, alone or in front
    of its training captions ((source, caption) pairs, as `check_training_captions` takes them):
    such a result is not saved."""
    subject = f"the trained embedding \"{name}\" at step {step}"
    verdict = _judge(reading)
    if not verdict.allowed:
        raise PolicyViolation(f"Refused: {subject} encodes refused words: {_encodes(reading)}, which the "
                              f"prompt policy refuses ({_quoted(verdict.matches)}); it is not saved. {_WHY}")
    refused = [source for source, caption in captions
               if any(not check_prompt(f"{text}, {caption}").allowed for text in reading.texts)]
    if refused:
        raise PolicyViolation(f"Refused: {subject} encodes refused words: {_encodes(reading)}, and with them "
                              f"the training captions of {_quoted(refused, 3)} are refused; it is not saved. {_WHY}")

"""Words as the text encoder reads them: the byte-pair pieces of the bundled CLIP tokenizer.

CLIP splits a word it does not know into known pieces, so ``childnude`` reaches the model as
``child`` + ``nude`` — the policy reads those pieces as words too (`emaki.safety.lexicon`).
This is the tokenizer's own algorithm (Sennrich et al. 2016, byte-level as in CLIP) on its own
merge table (``emaki/data/clip-tokenizer/merges.txt``), for the Latin-letter words the policy
reads; it needs neither transformers nor the vocabulary, since every merge result is a
vocabulary entry. Letters and digits are separate words to CLIP, as they are here.

>>> bpe_pieces("childnude"), bpe_pieces("kidney"), bpe_pieces("kid2nude")
(('child', 'nude'), ('kidney',), ('kid', 'nude'))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import pairwise

_END = "</w>"  # CLIP marks the last piece of a word
_LETTERS_RE = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Bpe:
    """The merge table: (left, right) → rank, lower ranks merged first; `whole_words` are the
    words the vocabulary holds whole (each is its own single piece: the tests check them)."""

    ranks: dict[tuple[str, str], int]
    whole_words: frozenset[str]

    def pieces(self, word: str) -> tuple[str, ...]:
        """The pieces CLIP encodes a folded word as (letters only; digits and other characters
        separate words, as in CLIP's pre-tokenizer)."""
        return tuple(piece for run in _LETTERS_RE.findall(word) for piece in self._merge(run))

    def _merge(self, letters: str) -> tuple[str, ...]:
        """Apply the lowest-ranked merge present until none applies (CLIP's `bpe`)."""
        if letters in self.whole_words:
            return (letters,)
        ranks = self.ranks
        word = [*letters[:-1], letters[-1] + _END]
        while len(word) > 1:
            best = min(pairwise(word), key=lambda pair: ranks.get(pair, 1 << 30))
            if best not in ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(piece.removesuffix(_END) for piece in word)


@cache
def load_bpe() -> Bpe:
    """Read the merge table (once per process)."""
    path = resources.files("emaki.data").joinpath("clip-tokenizer/merges.txt")
    pairs = [line.partition(" ")[::2] for line in path.read_text("utf-8").splitlines()[1:]]
    ranks = {pair: rank for rank, pair in enumerate(pairs)}
    whole = frozenset(a + b.removesuffix(_END) for a, b in pairs if b.endswith(_END))
    return Bpe(ranks, whole)


def bpe_pieces(word: str) -> tuple[str, ...]:
    """`Bpe.pieces` with the bundled merge table."""
    return load_bpe().pieces(word)

"""CLIP tokens written back as text, the ways people write them, for the policy to read.

CLIP's pre-tokenizer cuts text into runs — of letters, of one digit, or of other characters —
drops the spaces, and marks the last piece of each run (``</w>``): ``child`` + ``nude</w>`` is
one run, ``childnude``. So a space it dropped is certain only between two runs of letters;
between a letter and a digit, two digits, or next to punctuation, the tokens are the same with or
without one: ``24 years old`` and ``2 4 years old`` are one token sequence, as are ``k1dnaked``
and ``k 1 dnaked``. `writings` gives the plausible ways of writing a token sequence, and the
policy judges each (`emaki.safety.embeddings`):

* tight — spaces only where certain, after tag separators and before brackets:
  ``1girl, 24years old, k1dnaked``;
* apart — digits also set apart from letters: ``1 girl, 24 years old, k 1 dnaked``;
* leading — digits apart from the letters before them only (leetspeak starts with a digit:
  ``lying 70pl355``): ``1girl, 24years old, k 1dnaked``;
* spaced — every run apart, digits kept together: ``1 girl , 24 years old , k 1 dnaked``;
* spelled — as spaced, and digits apart too inside text spelled out one character at a time
  (``a g e 1 1``), where a run of digits is not a number.

>>> from emaki.models.tokenizer import load_clip_tokenizer
>>> tokenizer = load_clip_tokenizer()
>>> ids = tokenizer(["1girl, 24 years old, k1dnaked"], add_special_tokens=False)["input_ids"][0]
>>> writings(ids, tokenizer)[:4]  # doctest: +NORMALIZE_WHITESPACE
('1girl, 24years old, k1dnaked', '1 girl, 24 years old, k 1 dnaked', '1girl, 24years old, k 1dnaked',
 '1 girl , 24 years old , k 1 dnaked')
>>> writings(tokenizer(["age 11, 1000 years"], add_special_tokens=False)["input_ids"][0], tokenizer)[4]
'age 11 , 1000 years'
>>> writings(tokenizer(["a g e 1 1"], add_special_tokens=False)["input_ids"][0], tokenizer)[4]
'a g e 1 1'
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_END_OF_WORD = "</w>"
_CLOSING = tuple(",;)]}>|")  # written with a space after
_OPENING = tuple("([{<")  # written with a space before
_MIN_SPELLED = 4  # single characters in a row that spell something out (`a g e 1 1`) ...
_MIN_SPELLED_LETTERS = 2  # ... among them letters (`, 1 0 0 0` is a number)


@dataclass(frozen=True)
class _Run:
    """One run of CLIP's pre-tokenizer: its tokens (as the vocabulary writes them) and its text."""

    tokens: tuple[str, ...]
    text: str
    spelled: bool = False  # one character among several in a row

    @property
    def kind(self) -> str:
        """"L" letters, "D" a digit, "P" anything else (punctuation, marks, invisible characters)."""
        if self.text.isdigit():
            return "D"
        if self.text and all(unicodedata.category(c).startswith("L") for c in self.text):
            return "L"
        return "P"


def _tight(a: _Run, b: _Run) -> bool:
    return (a.kind == b.kind == "L" or (a.kind == "P" and a.text.endswith(_CLOSING) and b.kind != "P")
            or (b.kind == "P" and b.text.startswith(_OPENING) and a.kind != "P"))


def _apart(a: _Run, b: _Run) -> bool:
    return _tight(a, b) or {a.kind, b.kind} == {"L", "D"}


def _leading(a: _Run, b: _Run) -> bool:
    return _tight(a, b) or (a.kind == "L" and b.kind == "D")


def _spaced(a: _Run, b: _Run) -> bool:
    return not a.kind == b.kind == "D"


def _spelled(a: _Run, b: _Run) -> bool:
    return _spaced(a, b) or (a.spelled and b.spelled)


_STYLES: tuple[Callable[[_Run, _Run], bool], ...] = (_tight, _apart, _leading, _spaced, _spelled)


def _runs(token_ids: Sequence[int], tokenizer: Any) -> list[_Run]:
    """The pre-tokenizer's runs (a run ends with the token that carries the end mark)."""
    grouped: list[list[str]] = [[]]
    for token in tokenizer.convert_ids_to_tokens(list(token_ids)):
        grouped[-1].append(token.removesuffix(_END_OF_WORD))
        if token.endswith(_END_OF_WORD):
            grouped.append([])
    runs = [_Run(tuple(g), tokenizer.convert_tokens_to_string(g)) for g in grouped if g]
    single = [len(run.text) == 1 for run in runs]
    start = 0
    for end in range(len(runs) + 1):  # mark runs of `_MIN_SPELLED` or more single characters
        if end < len(runs) and single[end]:
            continue
        letters = sum(run.kind == "L" for run in runs[start:end])
        if end - start >= _MIN_SPELLED and letters >= _MIN_SPELLED_LETTERS:
            runs[start:end] = [_Run(run.tokens, run.text, spelled=True) for run in runs[start:end]]
        start = end + 1
    return runs


def writings(token_ids: Sequence[int], tokenizer: Any) -> tuple[str, ...]:
    """The ways of writing `token_ids` (see above): tight, apart, leading, spaced, spelled (some may
    be equal)."""
    runs = _runs(token_ids, tokenizer)
    found = []
    for space in _STYLES:
        groups: list[list[str]] = [[]]
        for run, following in zip(runs, [*runs[1:], None], strict=True):
            groups[-1].extend(run.tokens)
            if following is not None and space(run, following):
                groups.append([])
        found.append(" ".join(tokenizer.convert_tokens_to_string(group) for group in groups).strip())
    return tuple(found)

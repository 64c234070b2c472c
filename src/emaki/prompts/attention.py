"""Emphasis: `(x)`, `[x]`, `(x:w)`, escapes and BREAK, as A1111 v1.10.1 reads them (specs §4.2).

The text is cut into tokens by one regex tried in order (escapes, a lone backslash, openers,
`:w)` closers, plain closers, text, a colon); openers push the current output position, closers
multiply everything written since by 1.1, 1/1.1 or `w`; unclosed openers apply to the end;
runs of equal weight merge. BREAK inside text runs becomes the marker `("BREAK", -1.0)`.

>>> parse_attention("an (important) word")
[('an ', 1.0), ('important', 1.1), (' word', 1.0)]
>>> parse_attention("(unbalanced")
[('unbalanced', 1.1)]
>>> parse_attention(r"\\(literal\\]")
[('(literal]', 1.0)]
>>> parse_attention("(unnecessary)(parens)")
[('unnecessaryparens', 1.1)]
>>> parse_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")  # doctest: +NORMALIZE_WHITESPACE
[('a ', 1.0), ('house', 1.5730000000000004), (' ', 1.1), ('on', 1.0), (' a ', 1.1),
 ('hill', 0.55), (', sun, ', 1.1), ('sky', 1.4641000000000006), ('.', 1.1)]
>>> parse_attention("a BREAK b")
[('a', 1.0), ('BREAK', -1.0), ('b', 1.0)]
>>> parse_attention("(a:1.2.3)")
Traceback (most recent call last):
...
emaki.errors.PromptError: emphasis weight '1.2.3' at position 3 in '(a:1.2.3)' is not a number
"""

from __future__ import annotations

import re

import numpy as np

from emaki.errors import PromptError

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# Alternatives in the reference's order; group 1 is the weight of a `(text:w)` closer.
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                  # escaped bracket or backslash: the literal character
    | \\                          # lone backslash: dropped (does not escape the next char)
    | [(\[]                       # opener
    | :\s*([+-]?[.\d]+)\s*\)      # closer of (text:w)
    | [)\]]                       # plain closer
    | [^\\()\[\]:]+               # text
    | :                           # a colon that is not a weight
    """,
    re.VERBOSE,
)
_TOKEN_2022 = re.compile(
    r"""
    \\[()\[\]\\] | \\ | [(\[] | :([+-]?[.\d]+)\) | [)\]] | [^\\()\[\]:]+ | :
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)

BREAK_MARKER = "BREAK"


def parse_attention(text: str, *, legacy_2022: bool = False) -> list[tuple[str, float]]:
    """Split `text` into `(fragment, weight)` runs by A1111's emphasis rules (specs §4.2).

    `legacy_2022=True` reads the late-2022 rules: no whitespace allowed around an explicit
    weight and no BREAK. A weight that the reference's regex accepts but `float()` rejects
    (`(a:1.2.3)`, `(a:.)`) raises `PromptError` where A1111's generation crashes.

    >>> parse_attention("(red hair: 1.5 )")
    [('red hair', 1.5)]
    >>> parse_attention("(red hair: 1.5 )", legacy_2022=True)
    [('red hair: 1.5 ', 1.1)]
    >>> parse_attention("(a:1.5:2)"), parse_attention("(a:x)"), parse_attention("")
    ([('a:1.5', 2.0)], [('a:x', 1.1)], [('', 1.0)])
    """
    pattern = _TOKEN_2022 if legacy_2022 else _TOKEN
    fragments: list[str] = []
    weights = _Weights()
    round_open: list[int] = []
    square_open: list[int] = []

    for match in pattern.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            fragments.append(token[1:])
            weights.append_one()
        elif token == "(":
            round_open.append(len(fragments))
        elif token == "[":
            square_open.append(len(fragments))
        elif weight is not None and round_open:
            weights.multiply_from(round_open.pop(), _weight_value(weight, match, text))
        elif token == ")" and round_open:
            weights.multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            weights.multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        elif legacy_2022:
            fragments.append(token)
            weights.append_one()
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    fragments.append(BREAK_MARKER)
                    weights.append_one(-1.0)
                fragments.append(part)
                weights.append_one()

    # Unclosed openers apply to the end: all round ones first, then all square ones.
    for start in round_open:
        weights.multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        weights.multiply_from(start, SQUARE_MULTIPLIER)

    if not fragments:
        return [("", 1.0)]
    values = weights.tolist()
    merged: list[tuple[str, float]] = []
    pieces: list[str] = [fragments[0]]
    current = values[0]
    for fragment, w in zip(fragments[1:], values[1:]):
        if w == current:  # exact float equality, as the reference
            pieces.append(fragment)
        else:
            merged.append(("".join(pieces), current))
            pieces, current = [fragment], w
    merged.append(("".join(pieces), current))
    return merged


class _Weights:
    """The weights of the runs so far; `multiply_from` scales a suffix in one vector operation.

    Every bracket scales the runs written since it opened, so a prompt with deep nesting
    would cost O(runs x brackets) scalar Python multiplications; numpy keeps that in C.
    Element-wise float64 products are the same IEEE operations as Python's, in the same
    order, so weights are bit-identical to the reference's.
    """

    def __init__(self) -> None:
        self._data = np.empty(64, dtype=np.float64)
        self._size = 0

    def append_one(self, value: float = 1.0) -> None:
        if self._size == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self._size] = value
        self._size += 1

    def multiply_from(self, start: int, factor: float) -> None:
        if start < self._size:
            with np.errstate(over="ignore", invalid="ignore"):  # inf/nan as Python floats give
                self._data[start : self._size] *= factor

    def tolist(self) -> list[float]:
        return [float(w) for w in self._data[: self._size].tolist()]


def _weight_value(literal: str, match: re.Match[str], text: str) -> float:
    try:
        return float(literal)
    except ValueError:
        raise PromptError(
            f"emphasis weight {literal!r} at position {match.start(1)} in {_clip(text)!r} "
            "is not a number"
        ) from None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

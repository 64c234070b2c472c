"""`AND`: a prompt as several weighted sub-prompts for composable diffusion (specs §4.4).

>>> parse_and("a cat AND a dog:0.5")
[('a cat', 1.0), (' a dog', 0.5)]
>>> parse_and("ANDROID girl")
[('ANDROID girl', 1.0)]
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
# Text (lazy, may span lines), then an optional `: weight`, then trailing whitespace.
_PART = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
_PART_2022 = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def parse_and(prompt: str, *, legacy_2022: bool = False) -> list[tuple[str, float]]:
    """Split `prompt` on the word `AND` into `(text, weight)` parts, as A1111 does.

    A part keeps its leading whitespace and loses its trailing whitespace; a trailing
    `:number` is its weight (default 1.0, may be negative). That also holds without `AND`:
    a prompt ending in `:2` has weight 2. The late-2022 regex (`legacy_2022=True`) could not
    cross a newline, so such a part was kept whole, trailing space and weight included.

    >>> parse_and("masterpiece, 1girl:1.5")
    [('masterpiece, 1girl', 1.5)]
    >>> parse_and("a AND b : -1 AND (c:1.2)")
    [('a', 1.0), (' b', -1.0), (' (c:1.2)', 1.0)]
    >>> parse_and("line one\\nline two AND x", legacy_2022=True)
    [('line one\\nline two ', 1.0), (' x', 1.0)]
    """
    pattern = _PART_2022 if legacy_2022 else _PART
    parts: list[tuple[str, float]] = []
    for part in _AND.split(prompt):
        match = pattern.search(part)
        if match is None:
            parts.append((part, 1.0))
            continue
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts

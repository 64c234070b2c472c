"""Regular expressions from users and files that cannot hang emaki.

Python's `re` backtracks and has no time limit: `(a+)+$` tries every way of splitting a text
between its two repeats, so 40 characters take longer than anyone waits, and a recipe replayed
from a downloaded model can carry such a pattern. Rather than running `re` in a killable child
process or shipping another engine, `bounded_regex` keeps `re` and its exact semantics and refuses
a pattern whose backtracking could be large on the texts it will see (keys, file names: short):

* at most `MAX_PATTERN_LENGTH` characters, no backreferences (`\\1`, `(?P=x)`, `(?(1)..)`);
* an upper bound on the work of one search is computed from the parse tree: a text of `n`
  characters is tried from `n` positions, and from each one the pattern can split it in at most
  `ways(pattern)` ways, where a sequence multiplies its parts' ways, an alternation adds its
  branches', and a repeat of something with `w` ways sums `w^k` over the counts `k` it allows
  (at most `n` of them). `n × ways` must stay under `MAX_WORK` (measured: at most 0.7 s of `re`
  on 256 characters, and ordinary patterns take microseconds). Nested repeats and repeated overlapping
  alternatives (`(a+)+`, `(a|ab)*`, `(a?){25}`) are exponential and always refused; two
  unbounded repeats in a row (`.*x.*`) are fine.

The bound is conservative: `(ab|cd)+` is safe but refused; `(?:ab|cd)` without the repeat, or a
character class (`[ab]+`), says the same thing and passes.
"""

from __future__ import annotations

import re
from re import _parser  # type: ignore[attr-defined]  # the one parse tree of `re`; no public API
from typing import Any

from emaki.errors import EmakiError, ParamsError

MAX_PATTERN_LENGTH = 256
MAX_WORK = 1 << 25
_SINGLE = {"LITERAL", "NOT_LITERAL", "ANY", "IN", "AT", "CATEGORY"}
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


class _Refused(Exception):
    """Why a pattern is refused (turned into the caller's error)."""


def bounded_regex(pattern: str, field: str, *, max_text: int,
                  error: type[EmakiError] = ParamsError) -> re.Pattern[str]:
    """`re.compile(pattern)`, or `error` naming `field` when a search over a text of up to
    `max_text` characters could backtrack for long (see the module doc)."""
    shown = repr(pattern if len(pattern) <= 60 else pattern[:57] + "...")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise error(f"{field}: {shown} has {len(pattern)} characters; "
                    f"at most {MAX_PATTERN_LENGTH} are allowed")
    try:
        compiled = re.compile(pattern)
        ways = _ways(_parser.parse(pattern).data, max_text)
    except re.error as e:
        raise error(f"{field}: {shown} is not a valid regular expression ({e})") from None
    except RecursionError:
        raise error(f"{field}: {shown} nests groups too deeply") from None
    except _Refused as e:
        raise error(f"{field}: {shown} {e}") from None
    if max(1, max_text) * ways > MAX_WORK:
        raise error(f"{field}: {shown} can match a text in too many ways (repeats or "
                    "alternatives one after another) and could backtrack for a very long time; "
                    "simplify it")
    return compiled


def _capped(value: int) -> int:
    return min(value, MAX_WORK + 1)


def _ways(items: list[tuple[Any, Any]], n: int) -> int:
    """An upper bound on the ways a sequence of parse-tree items can match (capped)."""
    total = 1
    for op, value in items:
        total = _capped(total * _item_ways(str(op), value, n))
    return total


def _item_ways(op: str, value: Any, n: int) -> int:
    if op in _SINGLE:
        return 1
    if op == "SUBPATTERN":
        return _ways(value[-1], n)
    if op == "ATOMIC_GROUP":
        return _ways(value, n)
    if op in ("ASSERT", "ASSERT_NOT"):
        return _ways(value[1], n)
    if op == "BRANCH":
        return _capped(sum(_ways(branch, n) for branch in value[1]))
    if op in _REPEATS:
        low, high, body = value
        return _repeat_ways(low, high, _ways(body, n), n)
    if op.startswith("GROUPREF"):
        raise _Refused("uses a backreference (\\1, (?P=name) or (?(1)...)); not allowed here")
    raise _Refused(f"uses {op}, which emaki does not run")


def _repeat_ways(low: int, high: int, body: int, n: int) -> int:
    """Σ body^k for k in [low, high], a repeat matching at most `n` times (each time at least
    one character: a text has no more; more empty matches add no new way to split it)."""
    high = max(low, min(high, n))
    if body == 1:
        return _capped(high - low + 1)
    if high != low:
        # A repeat of something that matches in several ways: exponential in the text's length.
        raise _Refused("repeats a part that can itself match in several ways (like (a+)+, "
                       "(a|ab)* or (.*x){9}) and could backtrack for a very long time; simplify it")
    power = 1
    for _ in range(low):
        power = _capped(power * body)
    return power

"""Prompt editing `[from:to:when]` and alternation `[a|b]` over the sampling steps (specs §4.3).

The reference parses with a grammar (Earley) in which, at the top level, bracket and colon
characters that do not form a construct are kept as text, while inside a construct everything
must be well formed. This module implements the same language with one left-to-right scan:
inside a construct the parse is deterministic, so a `[` either opens exactly one construct or
none; at the top level a `[` that opens one is read as that construct (the outermost reading
wins, as in the reference), otherwise it is text. A `|` outside an alternation, or a backslash
at the end or before a newline, makes the prompt unparsable: it then comes back unchanged.
The scan is linear in the length of the prompt, whatever the nesting depth.

Where a construct touches stray `]` or `:` characters (`[a:3]]]`), the reference grammar is
ambiguous, and A1111's parser (lark 1.1.2, Earley) resolves it through set iteration order,
which follows Python's per-process hash seed: the same prompt is edited in one run and taken
literally in the next. emaki always reads every well-formed construct, which is one of the
reference's readings; wherever the reference is deterministic, the results are identical.

>>> prompt_schedules("a [b:3]", 10)
[(3, 'a '), (10, 'a b')]
>>> prompt_schedules("a [b : c : 1] d", 10)
[(1, 'a b  d'), (10, 'a  c  d')]
>>> prompt_schedules("a[b:[c:d:2]:1]e", 10)
[(1, 'abe'), (2, 'ace'), (10, 'ade')]
>>> prompt_schedules("a [b:.5] c", 10)
[(5, 'a  c'), (10, 'a b c')]
>>> prompt_schedules("((a][:b:c [d:3]", 10)
[(3, '((a][:b:c '), (10, '((a][:b:c d')]
>>> prompt_schedules("[fe|]male", 4)
[(1, 'female'), (2, 'male'), (3, 'female'), (4, 'male')]
>>> prompt_schedules("[cat|dog:5]", 10)
[(10, '[cat|dog:5]')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emaki.errors import ParamsError

# SIGNED_NUMBER of the reference grammar: optional sign, then a float with optional exponent
# or an integer; the longest match is taken. Surrounding whitespace is allowed, then `]`.
_WHEN = re.compile(
    r"(\s*)([+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+))(\s*)\]"
)
# One run of plain text: any character but `\ [ ] ( ) : |`, or a backslash and the next
# character other than a newline (the reference's `.`).
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_SPECIAL = "[]():|\\"


@dataclass
class _Scheduled:
    before: list[_Node] | None
    after: list[_Node]
    literal: str  # the `when` number as written
    when: int = 0  # resolved for the current `steps`


@dataclass
class _Alternate:
    options: list[list[_Node]] = field(default_factory=list)


_Node = str | _Scheduled | _Alternate


class _Unparsable(Exception):
    """The whole prompt does not fit the grammar; it is used unchanged."""


def prompt_schedules(
    prompt: str, steps: int, *, old_timelines: bool = False
) -> list[tuple[int, str]]:
    """`[(end_at_step, text), ...]` for `prompt` over `steps` steps (specs §4.3).

    The sampler uses, at 0-based denoiser call `k`, the first entry with `k <= end_at_step`.
    `when` with a `.` is a fraction of `steps` (`int(when * steps)`), otherwise a step count;
    both are clamped to `steps`, and boundaries below 1 are dropped. `old_timelines=True`
    gives the late-2022 rule: `when < 1` is a fraction, anything else a step count; boundaries
    below 1 are dropped there too, so `[a:b:0]` is `b` from the first call (as A1111 does).

    >>> prompt_schedules("a [dog:cat:0] in the park", 20)
    [(20, 'a cat in the park')]
    >>> prompt_schedules("a [dog:cat:0] in the park", 20, old_timelines=True)
    [(20, 'a cat in the park')]
    >>> prompt_schedules("[a:b:1.5]", 20), prompt_schedules("[a:b:1.5]", 20, old_timelines=True)
    ([(20, 'a')], [(1, 'a'), (20, 'b')])
    >>> prompt_schedules("[a|[b|c]]", 4)
    [(1, 'a'), (2, 'c'), (3, 'a'), (4, 'c')]
    """
    if steps < 1:
        raise ParamsError(f"steps must be at least 1 to schedule a prompt, got {steps}")
    try:
        tree = _parse(prompt)
    except _Unparsable:
        return [(steps, prompt)]

    boundaries = {steps}
    for node in _walk(tree):
        if isinstance(node, _Scheduled):
            node.when = _resolve_when(node.literal, steps, old_timelines)
            if node.when >= 1:
                boundaries.add(node.when)
        elif isinstance(node, _Alternate):
            boundaries.update(range(1, steps + 1))
    return [(step, _text_at(tree, step)) for step in sorted(boundaries)]


def _resolve_when(literal: str, steps: int, old_timelines: bool) -> int:
    value = float(literal)
    if old_timelines:
        value = value * steps if value < 1 else value
    elif "." in literal:
        value = value * steps
    return min(steps, int(value))


def _walk(tree: list[_Node]) -> list[_Scheduled | _Alternate]:
    """Every construct in the tree, iteratively (nesting may be thousands deep)."""
    found: list[_Scheduled | _Alternate] = []
    pending = [tree]
    while pending:
        for node in pending.pop():
            if isinstance(node, _Scheduled):
                found.append(node)
                if node.before is not None:
                    pending.append(node.before)
                pending.append(node.after)
            elif isinstance(node, _Alternate):
                found.append(node)
                pending.extend(node.options)
    return found


def _text_at(tree: list[_Node], step: int) -> str:
    """The prompt text at `step`: `from` while `step <= when`, alternation option `(step-1) % n`."""
    out: list[str] = []
    stack = [iter(tree)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
        elif isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            chosen = (node.before or []) if step <= node.when else node.after
            stack.append(iter(chosen))
        else:
            stack.append(iter(node.options[(step - 1) % len(node.options)]))
    return "".join(out)


# --- the parser ---------------------------------------------------------------------------


@dataclass
class _Frame:
    """A construct being read: `(` (kind "round") or `[` (kind "square")."""

    kind: str
    start: int
    parts: list[list[_Node]]  # completed prompts before the current one
    current: list[_Node] = field(default_factory=list)
    state: str = "first"  # round: first|second; square: first|second|alternate


def _parse(prompt: str) -> list[_Node]:
    """Parse the whole prompt into text pieces and constructs, or raise `_Unparsable`."""
    known: dict[int, tuple[int, list[_Node]] | None] = {}  # `[` position -> (end, nodes)
    top: list[_Node] = []
    pos, n = 0, len(prompt)
    while pos < n:
        ch = prompt[pos]
        if ch == "[":
            if pos not in known:
                _parse_construct(prompt, pos, known)
            result = known[pos]
            if result is not None:
                end, nodes = result
                top.extend(nodes)
                pos = end
                continue
            top.append(ch)
            pos += 1
        elif ch in "]():":
            top.append(ch)  # stray bracket or colon at the top level: text
            pos += 1
        elif ch == "|":
            raise _Unparsable
        else:
            pos = _read_plain(prompt, pos, top)
    return top


def _read_plain(prompt: str, pos: int, out: list[_Node]) -> int:
    match = _PLAIN.match(prompt, pos)
    if match is None:  # a backslash at the end or before a newline
        raise _Unparsable
    out.append(match.group(0))
    return match.end()


def _parse_construct(
    prompt: str, start: int, known: dict[int, tuple[int, list[_Node]] | None]
) -> None:
    """Read the construct opening with `[` at `start`; record it (or its failure) in `known`.

    Every `[` opened inside that fails makes all open constructs fail (each needs its children
    well formed), so they are all recorded as failures; completed inner `[` constructs are
    recorded as successes, so the top-level scan never reads the same text twice.
    """
    frames = [_Frame("square", start, [])]
    pos, n = start + 1, len(prompt)

    def fail() -> None:
        for frame in frames:
            if frame.kind == "square":
                known[frame.start] = None

    while True:
        frame = frames[-1]
        if pos >= n:
            return fail()
        ch = prompt[pos]
        if ch not in _SPECIAL or ch == "\\":
            match = _PLAIN.match(prompt, pos)
            if match is None:
                return fail()
            frame.current.append(match.group(0))
            pos = match.end()
            continue
        if ch == "(":
            frames.append(_Frame("round", pos, []))
            pos += 1
            continue
        if ch == "[":
            if pos in known:
                result = known[pos]
                if result is None:
                    return fail()
                end, nodes = result
                frame.current.extend(nodes)
                pos = end
            else:
                frames.append(_Frame("square", pos, []))
                pos += 1
            continue
        closed, pos = _close_or_continue(prompt, frame, ch, pos)
        if closed is None:
            if pos < 0:
                return fail()
            continue
        frames.pop()
        if frame.kind == "square":
            known[frame.start] = (pos, closed)
        if not frames:
            return None
        frames[-1].current.extend(closed)


def _close_or_continue(
    prompt: str, frame: _Frame, ch: str, pos: int
) -> tuple[list[_Node] | None, int]:
    """Handle `] ) : |` at `pos` inside `frame`.

    Returns `(nodes, end)` when the frame closes, `(None, next_pos)` when it goes on, and
    `(None, -1)` when the character is not allowed there.
    """
    if frame.kind == "round":
        if ch == ")":
            body = frame.parts[0] + [":"] + frame.current if frame.parts else frame.current
            return ["(", *body, ")"], pos + 1
        if ch == ":" and frame.state == "first":
            frame.parts.append(frame.current)
            frame.current, frame.state = [], "second"
            return None, pos + 1
        return None, -1

    if frame.state == "alternate":
        if ch == "|":
            frame.parts.append(frame.current)
            frame.current = []
            return None, pos + 1
        if ch == "]":
            return [_Alternate([*frame.parts, frame.current])], pos + 1
        return None, -1

    if frame.state == "first":
        if ch == "]":
            return ["[", *frame.current, "]"], pos + 1
        if ch == "|":
            frame.parts.append(frame.current)
            frame.current, frame.state = [], "alternate"
            return None, pos + 1
        if ch == ":":
            when = _WHEN.match(prompt, pos + 1)
            if when is not None:  # [to:when]
                return [_Scheduled(None, frame.current, when.group(2))], when.end()
            frame.parts.append(frame.current)
            frame.current, frame.state = [], "second"
            return None, pos + 1
        return None, -1

    # state "second": [from:to ... needs `:when]`
    if ch == ":":
        when = _WHEN.match(prompt, pos + 1)
        if when is not None:
            return [_Scheduled(frame.parts[0], frame.current, when.group(2))], when.end()
    return None, -1

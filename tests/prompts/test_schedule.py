"""`prompt_schedules` against structures derived by hand from specs §4.3, quirks included."""

from __future__ import annotations

import time

import pytest

from emaki.errors import ParamsError
from emaki.prompts import prompt_schedules


def alternating(steps: int, *texts: str) -> list[tuple[int, str]]:
    return [(step, texts[(step - 1) % len(texts)]) for step in range(1, steps + 1)]


CASES: list[tuple[str, int, list[tuple[int, str]]]] = [
    ("test", 10, [(10, "test")]),
    ("", 10, [(10, "")]),
    # the three editing forms
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b:3 ]", 10, [(3, "a "), (10, "a b")]),
    ("[cat:dog:3]", 10, [(3, "cat"), (10, "dog")]),
    ("[cat::3] girl", 10, [(3, "cat girl"), (10, " girl")]),
    ("[:3]", 10, [(3, ""), (10, "")]),
    (" [a: b : 3 ] ", 10, [(3, " a "), (10, "  b  ")]),  # text keeps its spaces
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    # nesting and other syntax inside
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("[a:(b:1.2):3]", 10, [(3, "a"), (10, "(b:1.2)")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("[a:b:3][c:d:6]", 10, [(3, "ac"), (6, "bc"), (10, "bd")]),
    ("[a\n:b:\n3\n]", 10, [(3, "a\n"), (10, "b")]),
    ("[a\\:b:3]", 10, [(3, ""), (10, "a\\:b")]),  # escapes stay as written
    ("[a:b\\]:3]", 10, [(3, "a"), (10, "b\\]")]),
    # when: fractions (with a dot) and step counts, v1.10.1 rules
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    ("[a:b:0.25]", 20, [(5, "a"), (20, "b")]),
    ("[a:b:.5]", 20, [(10, "a"), (20, "b")]),
    ("[a:b:1.0]", 20, [(20, "a")]),  # 1.0 is a fraction: step 20
    ("[a:b:1.5]", 20, [(20, "a")]),  # 30, clamped to 20
    ("[a:b:1]", 20, [(1, "a"), (20, "b")]),
    ("[a:b:30]", 20, [(20, "a")]),
    ("[dog:cat:0]", 20, [(20, "cat")]),  # step < 1 is dropped
    ("[a:b:-1]", 10, [(10, "b")]),
    ("[a:b:+3]", 10, [(3, "a"), (10, "b")]),
    ("[a:b:1e1]", 20, [(10, "a"), (20, "b")]),  # an exponent without a dot: a step count
    ("[a:b:0.29]", 100, [(28, "a"), (100, "b")]),  # int(0.29 * 100) = int(28.999999999999996)
    ("[a:b:0.3]", 10, [(3, "a"), (10, "b")]),
    # alternation
    ("[a|(b:1.1)]", 4, alternating(4, "a", "(b:1.1)")),
    ("[fe|]male", 10, alternating(10, "female", "male")),
    ("[fe|||]male", 10, alternating(10, "female", "male", "male", "male")),
    ("[|]", 3, alternating(3, "")),
    ("[a|[b|c]]", 6, alternating(6, "a", "c")),  # nested: the same step index
    ("[[a:b:1]|c]", 4, [(1, "a"), (2, "c"), (3, "b"), (4, "c")]),
    ("([a|b])", 4, alternating(4, "(a)", "(b)")),
    ("[a:b:3][c|d]", 4, [(1, "ac"), (2, "ad"), (3, "ac"), (4, "bd")]),
    ("[cat|dog] [a:b:2]", 3, [(1, "cat a"), (2, "dog a"), (3, "cat b")]),
    # stray brackets and colons stay as text at the top level
    ("a [unbalanced", 10, [(10, "a [unbalanced")]),
    ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("(a [b:c:2]", 5, [(2, "(a b"), (5, "(a c")]),
    ("[a:b:2] :)", 5, [(2, "a :)"), (5, "b :)")]),
    ("x [a:b:2] [[[y]", 5, [(2, "x a [[[y]"), (5, "x b [[[y]")]),
    ("smile :) [a|b]", 3, alternating(3, "smile :) a", "smile :) b")),
    ("[]", 10, [(10, "[]")]),
    ("[:]", 10, [(10, "[:]")]),
    # unparsable: returned unchanged, even where a construct could be read
    ("[cat|dog:5]", 10, [(10, "[cat|dog:5]")]),
    ("a [b:c:d:3]", 10, [(10, "a [b:c:d:3]")]),
    ("a [b:c]", 10, [(10, "a [b:c]")]),
    ("a [{b|d{:.5] c", 10, [(10, "a [{b|d{:.5] c")]),
    ("a | b [c:3]", 10, [(10, "a | b [c:3]")]),  # `|` outside an alternation
    ("(a|b) [c:3]", 10, [(10, "(a|b) [c:3]")]),
    ("[(a|b)]", 10, [(10, "[(a|b)]")]),
    ("[a:b:2]|", 10, [(10, "[a:b:2]|")]),
    ("[a:b:2] \\", 10, [(10, "[a:b:2] \\")]),  # a backslash at the end
    ("[a:b:2] \\\nc", 10, [(10, "[a:b:2] \\\nc")]),  # a backslash before a newline
    ("[a:b:1e]", 10, [(10, "[a:b:1e]")]),
    ("[a:b:5.5.5]", 10, [(10, "[a:b:5.5.5]")]),
    ("[a:(b:c:1.2):3]", 10, [(10, "[a:(b:c:1.2):3]")]),
    ("[a:b:3:4]", 10, [(10, "[a:b:3:4]")]),
    ("a \\[b:3]", 10, [(10, "a \\[b:3]")]),  # an escaped `[` opens nothing
]


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"), CASES, ids=[f"{c[0]!r}/{c[1]}"[:40] for c in CASES]
)
def test_prompt_schedules(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedules(prompt, steps) == expected


OLD_CASES: list[tuple[str, int, list[tuple[int, str]]]] = [
    ("[a:b:0.5]", 20, [(10, "a"), (20, "b")]),
    ("[a:b:1.5]", 20, [(1, "a"), (20, "b")]),  # >= 1: a step count, truncated
    ("[a:b:1.0]", 20, [(1, "a"), (20, "b")]),
    ("[a:b:5]", 20, [(5, "a"), (20, "b")]),
    ("a [dog:cat:0] in the park", 20, [(20, "a cat in the park")]),  # below 1: dropped, as A1111 drops it
    ("[a:b:-1]", 10, [(10, "b")]),  # -1 < 1: a fraction, -10, dropped
    ("[a|b]", 3, alternating(3, "a", "b")),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), OLD_CASES)
def test_old_timelines(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedules(prompt, steps, old_timelines=True) == expected


def test_second_order_samplers_pass_doubled_steps() -> None:
    """The engine passes 2*steps for Heun & co (specs §4.3); fractions then line up."""
    assert prompt_schedules("[a:b:0.5]", 40) == [(20, "a"), (40, "b")]
    assert prompt_schedules("[a:b:10]", 40) == [(10, "a"), (40, "b")]


def test_steps_must_be_positive() -> None:
    with pytest.raises(ParamsError, match="steps"):
        prompt_schedules("a", 0)


def test_deep_nesting_does_not_recurse() -> None:
    deep = "[" * 5000 + "a:1]" * 5000
    result = prompt_schedules(deep, 10)
    assert result == [(1, ""), (10, "a" * 5000)]
    alternation = "[a|" * 3000 + "b" + "]" * 3000
    assert prompt_schedules(alternation, 2) == [(1, "a"), (2, "b")]


@pytest.mark.parametrize(
    "prompt",
    [
        "[" * 20000,
        "[a:" * 6000,
        "[a|" * 5000 + "]" * 5000,
        "masterpiece, [cat|dog] ears, [red:blue:0.5] hair, (smile:1.2), " * 300,
    ],
    ids=["open", "open-colon", "alternation", "real"],
)
def test_twenty_thousand_characters_schedule_quickly(prompt: str) -> None:
    prompt = prompt[:20000]
    start = time.perf_counter()
    prompt_schedules(prompt, 20)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[a:3]]]", [(3, "]]"), (5, "a]]")]),
        ("[a:3]::", [(3, "::"), (5, "a::")]),
        ("[c:2]:[e::4][", [(2, ":e["), (4, "c:e["), (5, "c:[")]),
    ],
)
def test_constructs_touching_stray_brackets_are_all_read(
    prompt: str, expected: list[tuple[int, str]]
) -> None:
    """Where a construct touches stray `]`/`:` characters, A1111's grammar is ambiguous and its
    parser (lark 1.1.2, Earley) picks a reading that changes with Python's per-process hash
    seed: the same prompt is edited in one run and literal in the next. emaki always reads
    every well-formed construct, which is one of the reference's readings."""
    assert prompt_schedules(prompt, 5) == expected

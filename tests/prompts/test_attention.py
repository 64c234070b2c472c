"""`parse_attention` against structures derived by hand from specs §4.2, quirks included."""

from __future__ import annotations

import pytest

from emaki.errors import PromptError
from emaki.prompts import parse_attention

R = 1.1  # ( )
S = 1 / 1.1  # [ ]

CASES: list[tuple[str, list[tuple[str, float]]]] = [
    # plain text and the simplest emphasis
    ("1girl, solo", [("1girl, solo", 1.0)]),
    ("", [("", 1.0)]),
    ("(masterpiece)", [("masterpiece", R)]),
    ("((masterpiece))", [("masterpiece", 1.0 * R * R)]),
    ("(((x)))", [("x", 1.3310000000000004)]),
    ("[bad hands]", [("bad hands", S)]),
    ("[[x]]", [("x", 1.0 * S * S)]),
    ("a (b) c", [("a ", 1.0), ("b", R), (" c", 1.0)]),
    # explicit weights
    ("(red hair:1.2), blue eyes", [("red hair", 1.2), (", blue eyes", 1.0)]),
    ("(red hair: 1.2 )", [("red hair", 1.2)]),
    ("(red hair :1.2)", [("red hair ", 1.2)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(x:+.5)", [("x", 0.5)]),
    ("(x:0)", [("x", 0.0)]),
    ("a (x:1.) b", [("a x b", 1.0)]),
    ("(a:１.５)", [("a", 1.5)]),  # `\d` is Unicode in Python's re, and float() agrees
    ("((a:1.2):1.5)", [("a", 1.0 * 1.2 * 1.5)]),
    ("(a (b:1.5) c)", [("a ", R), ("b", 1.5 * R), (" c", R)]),
    ("(a:1.5:2)", [("a:1.5", 2.0)]),  # only the last `:number)` is a weight
    ("(a:x)", [("a:x", R)]),
    ("(a:1.2 x)", [("a:1.2 x", R)]),
    ("a:1.2", [("a:1.2", 1.0)]),
    ("a:1.2)", [("a:1.2)", 1.0)]),  # a weight closer with no `(` open is text
    ("[a:1.2)", [("a:1.2)", S)]),
    ("(:1.2)", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("[]", [("", 1.0)]),
    # unbalanced brackets
    ("(unbalanced", [("unbalanced", R)]),
    ("[unbalanced", [("unbalanced", S)]),
    ("a)", [("a)", 1.0)]),
    ("a]", [("a]", 1.0)]),
    ("(a](b)", [("a]", R), ("b", 1.0 * R * R)]),
    ("([a", [("a", 1.0 * R * S)]),  # unclosed: all `(` first, then all `[`
    ("[(a", [("a", 1.0 * R * S)]),
    ("[(a)", [("a", 1.0 * R * S)]),
    ("(a[b)c]", [("a", R), ("b", 1.0 * R * S), ("c", S)]),
    ("a ((b", [("a ", 1.0), ("b", 1.0 * R * R)]),
    # merging of equal-weight runs
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
    ("(a) (b)", [("a", R), (" ", 1.0), ("b", R)]),
    ("((a)(b))", [("ab", 1.0 * R * R)]),
    ("(a:1.1)(b)", [("ab", 1.1)]),
    ("(a:0.5) (b:0.5)", [("a", 0.5), (" ", 1.0), ("b", 0.5)]),
    # escapes and the lone backslash
    ("\\(x\\)", [("(x)", 1.0)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("\\\\", [("\\", 1.0)]),
    ("a\\b", [("ab", 1.0)]),
    ("(a\\:1.2)", [("a", 1.2)]),  # the backslash does not escape the colon
    ("\\", [("", 1.0)]),
    ("(a)\\", [("a", R), ("", 1.0)]),  # the dropped backslash leaves an empty run
    ("\\((a)\\)", [("(", 1.0), ("a", R), (")", 1.0)]),
    # characters with no meaning in emphasis
    ("{masterpiece}", [("{masterpiece}", 1.0)]),
    ("[a|b]", [("a|b", S)]),
    ("[a:b:5]", [("a:b:5", S)]),
    ("（a）", [("（a）", 1.0)]),
    ("(猫耳:1.2), 少女", [("猫耳", 1.2), (", 少女", 1.0)]),
    # BREAK
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("BREAK at start", [("", 1.0), ("BREAK", -1.0), ("at start", 1.0)]),
    ("a BREAKb", [("a BREAKb", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(a BREAK b:1.2)", [("a", 1.2), ("BREAK", -1.2), ("b", 1.2)]),
    ("(a:1.2)BREAK", [("a", 1.2), ("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("BREAK:1", [("", 1.0), ("BREAK", -1.0), (":1", 1.0)]),
    ("(a BREAK b:0)", [("aBREAKb", 0.0)]),  # -0.0 == 0.0: the marker merges into the text
    ("BRE\\AK", [("BREAK", 1.0)]),  # a dropped backslash hides BREAK from the splitter
    # the reference's own docstring example
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_parse_attention(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_weights_are_bit_exact_float_products() -> None:
    assert parse_attention("((a))")[0][1] == 1.2100000000000002
    assert parse_attention("[[[a]]]")[0][1] == 1.0 * S * S * S


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "(a:1..)", "x (y: .. )"])
def test_weights_float_cannot_read_raise_prompt_error(text: str) -> None:
    with pytest.raises(PromptError, match="emphasis weight .* at position"):
        parse_attention(text)


def test_a_weight_with_no_open_paren_is_not_read_as_a_number() -> None:
    assert parse_attention("[a:1.2.3)") == [("a:1.2.3)", S)]
    assert parse_attention("a:1.2.3)") == [("a:1.2.3)", 1.0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(red hair: 1.5 )", [("red hair: 1.5 ", R)]),
        ("(red hair:1.5)", [("red hair", 1.5)]),
        ("a BREAK b", [("a BREAK b", 1.0)]),
        ("(a:1.5 )", [("a:1.5 ", R)]),
    ],
)
def test_late_2022_rules(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text, legacy_2022=True) == expected


def test_huge_weights_overflow_like_python_floats() -> None:
    [(text, weight)] = parse_attention("(" * 8000 + "a")
    assert text == "a" and weight == float("inf")

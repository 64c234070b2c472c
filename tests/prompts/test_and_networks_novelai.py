"""AND splitting (specs §4.4), extra-network tags (§1.5) and the NovelAI dialect (§4.8)."""

from __future__ import annotations

import pytest

from emaki.errors import ParamsError, PromptError
from emaki.prompts import (
    NetworkTag,
    extract_networks,
    from_novelai,
    parse_and,
    parse_attention,
    to_a1111,
)

AND_CASES: list[tuple[str, list[tuple[str, float]]]] = [
    ("a cat", [("a cat", 1.0)]),
    ("a AND b", [("a", 1.0), (" b", 1.0)]),
    ("a AND b:0.5", [("a", 1.0), (" b", 0.5)]),
    ("a:2 AND b", [("a", 2.0), (" b", 1.0)]),
    ("a AND b : -1", [("a", 1.0), (" b", -1.0)]),
    ("a AND b :+1.5", [("a", 1.0), (" b", 1.5)]),
    ("a AND b:1.", [("a", 1.0), (" b", 1.0)]),
    ("a AND b:.5  ", [("a", 1.0), (" b", 0.5)]),
    ("masterpiece, 1girl:1.5", [("masterpiece, 1girl", 1.5)]),  # a weight without AND
    ("ANDROID", [("ANDROID", 1.0)]),
    ("a ANDb", [("a ANDb", 1.0)]),
    ("aAND b", [("aAND b", 1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("AND", [("", 1.0), ("", 1.0)]),
    ("a AND AND b", [("a", 1.0), ("", 1.0), (" b", 1.0)]),
    ("(a:1.2) AND b", [("(a:1.2)", 1.0), (" b", 1.0)]),
    ("a:1.2.3", [("a:1.2.3", 1.0)]),
    ("a:1e3", [("a:1e3", 1.0)]),
    ("a: 2 ", [("a", 2.0)]),
    ("a:2\n", [("a", 2.0)]),
    (" a ", [(" a", 1.0)]),
    ("line one\nline two AND x", [("line one\nline two", 1.0), (" x", 1.0)]),
    ("a\nb:2", [("a\nb", 2.0)]),
    ("[a:b:5] AND c [d|e]:0.7", [("[a:b:5]", 1.0), (" c [d|e]", 0.7)]),
    (
        "1girl, (red hair:1.2) AND cat ears:-0.5",
        [("1girl, (red hair:1.2)", 1.0), (" cat ears", -0.5)],
    ),
]


@pytest.mark.parametrize(
    ("prompt", "expected"), AND_CASES, ids=[repr(c[0])[:30] for c in AND_CASES]
)
def test_parse_and(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_and(prompt) == expected


def test_parse_and_late_2022_regex_cannot_cross_lines() -> None:
    assert parse_and("line one\nline two AND x", legacy_2022=True) == [
        ("line one\nline two ", 1.0),
        (" x", 1.0),
    ]
    assert parse_and("a\nb:2", legacy_2022=True) == [("a\nb:2", 1.0)]
    assert parse_and("a:2 AND b", legacy_2022=True) == [("a", 2.0), (" b", 1.0)]


def tag(kind: str, *args: str) -> NetworkTag:
    return NetworkTag(kind, args)


NETWORK_CASES: list[tuple[str, str, list[NetworkTag]]] = [
    ("<hypernet:anime:0.8>", "", [tag("hypernet", "anime", "0.8")]),
    ("a <lora:x:1> b", "a  b", [tag("lora", "x", "1")]),
    ("<hypernet:a><hypernet:b:0.5>", "", [tag("hypernet", "a"), tag("hypernet", "b", "0.5")]),
    ("<hypernet:a:b:c>", "", [tag("hypernet", "a", "b", "c")]),
    ("<hyper-net:x>", "<hyper-net:x>", []),  # the kind is \w+
    ("<:x>", "<:x>", []),
    ("<a:>", "<a:>", []),
    ("<a:b>c>", "c>", [tag("a", "b")]),
    ("<a:<b:c>>", ">", [tag("a", "<b", "c")]),
    ("<hypernet:猫:0.5>, 1girl", ", 1girl", [tag("hypernet", "猫", "0.5")]),
    ("<a:b\nc>", "", [tag("a", "b\nc")]),
    ("(x:1.2) <hypernet:y:0.3> AND z", "(x:1.2)  AND z", [tag("hypernet", "y", "0.3")]),
]


@pytest.mark.parametrize(("prompt", "text", "tags"), NETWORK_CASES)
def test_extract_networks(prompt: str, text: str, tags: list[NetworkTag]) -> None:
    assert extract_networks(prompt) == (text, tags)


def test_network_tag_arguments() -> None:
    t = tag("hypernet", "x", "te=0.5", "1")
    assert (t.name, t.positional, t.named, t.multiplier) == ("x", ("x", "1"), {"te": "0.5"}, 1.0)
    assert tag("hypernet", "x").multiplier == 1.0
    assert tag("hypernet", "x", "-2.5").multiplier == -2.5
    assert tag("hypernet", "x", "0.8").text == "<hypernet:x:0.8>"
    with pytest.raises(PromptError, match="<hypernet:x:abc>"):
        tag("hypernet", "x", "abc").multiplier  # noqa: B018


NOVELAI_CASES: list[tuple[str, str]] = [
    ("{masterpiece}", "(masterpiece:1.05)"),
    ("{{masterpiece}}", "(masterpiece:1.1025)"),
    ("[x]", "(x:0.9524)"),
    ("[[x]]", "(x:0.907)"),
    ("{a} [b]", "(a:1.05) (b:0.9524)"),
    ("{a [b] c}", "(a :1.05)b( c:1.05)"),
    ("(x)", "\\(x\\)"),
    ("a\\b", "a\\\\b"),
    ("a}b", "a(b:0.9524)"),  # unbalanced: the level runs on
    ("{a", "(a:1.05)"),
    ("{a:2}", "(a:2:1.05)"),
    ("1girl, {{{solo}}}, [[[blurry]]]", "1girl, (solo:1.1576), (blurry:0.8638)"),
    ("", ""),
]


@pytest.mark.parametrize(("nai", "a1111"), NOVELAI_CASES)
def test_from_novelai(nai: str, a1111: str) -> None:
    assert from_novelai(nai) == a1111


def test_novelai_weights_as_a1111_reads_them() -> None:
    assert parse_attention(from_novelai("{{a}}")) == [("a", 1.1025)]
    assert parse_attention(from_novelai("{a:2}")) == [("a:2", 1.05)]
    assert parse_attention(from_novelai("smile (happy)")) == [("smile (happy)", 1.0)]
    assert parse_attention(from_novelai("{a [b] c}")) == [("a ", 1.05), ("b", 1.0), (" c", 1.05)]


def test_dialects() -> None:
    assert to_a1111("{a}", "a1111") == "{a}"  # A1111 gives braces no meaning
    assert to_a1111("{a}", "novelai") == "(a:1.05)"
    with pytest.raises(ParamsError, match="dialect"):
        to_a1111("a", "nai")

"""`bounded_regex`: a user's regex is compiled only when it cannot backtrack for long."""

from __future__ import annotations

import re

import pytest

from emaki.errors import ParamsError
from emaki.safe_regex import MAX_PATTERN_LENGTH, bounded_regex


@pytest.mark.parametrize(
    "pattern", [r"(a+)+$", r"(a|ab)*c", r"(\w+\s?)+$", r"(a?){30}b", r"(.*,){12}x", r"(?P<x>a)(?P=x)",
                r"(a)?(?(1)b|c)", "(" * 200 + ")" * 200, "x" * (MAX_PATTERN_LENGTH + 1)],
)
def test_patterns_that_can_backtrack_for_long_are_refused_naming_the_field(pattern):
    with pytest.raises(ParamsError, match=r"^filename_regex: '") as error:
        bounded_regex(pattern, "filename_regex", max_text=255)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


@pytest.mark.parametrize("pattern", [r"[a-z]+", r"\d+_\d+", r"(?i)girl|boy", r".*x.*", r"(?:ab){3}",
                                     r"^\d+-", r"(?=\w)\w+$", ""])
def test_ordinary_patterns_compile_to_the_same_regex(pattern):
    assert bounded_regex(pattern, "f", max_text=255) == re.compile(pattern)


def test_the_bound_depends_on_how_long_the_texts_are():
    bounded_regex(r".*a.*b.*c", "f", max_text=16)  # 16 positions x 17^3 ways
    with pytest.raises(ParamsError, match="too many ways"):
        bounded_regex(r".*a.*b.*c", "f", max_text=255)


def test_an_invalid_pattern_is_one_line():
    with pytest.raises(ParamsError, match=r"f: '\(' is not a valid regular expression"):
        bounded_regex("(", "f", max_text=10)

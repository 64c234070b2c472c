"""Ages written as numbers: under 18 is a minor indicator, 18 and over is not.

English forms are matched on the prompt's words joined by single spaces (inner punctuation is
already gone, so ``12-year-old`` reads ``12yearold``); CJK forms on the folded text.

>>> line = "12yo age 16 25 years old twelveyearold"
>>> [line[a:b] for a, b in latin_minor_ages(line)]
['12yo', 'twelveyearold', 'age 16']
>>> text = "12歳 十二歳 二十歳 18岁 小5 中二病"
>>> [text[a:b] for a, b in cjk_minor_ages(text)]
['12歳', '小5', '十二歳']
"""

from __future__ import annotations

import re
from collections.abc import Callable

_WORDS = (  # 0..17
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
)
_ORDINALS = (  # 1..12, for school grades
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth",
)
_VALUE = {w: i for i, w in enumerate(_WORDS)} | {w: i + 1 for i, w in enumerate(_ORDINALS)}

_NUM = r"(?P<n>\d{1,3}(?:\.\d{1,3})?|" + "|".join(sorted(_WORDS, key=len, reverse=True)) + ")"
_INT = r"(?P<n>\d{1,3}|" + "|".join(sorted(_WORDS, key=len, reverse=True)) + ")"
_ORD = r"(?P<n>\d{1,2}|" + "|".join(sorted(_ORDINALS, key=len, reverse=True)) + ")"
_START = r"(?<![\w.])"
_END = r"(?![a-z])"

# Each pattern has one capture `n` (the number) or none (always a minor).
_LATIN = [
    re.compile(_START + _NUM + r" ?(?:years?|yrs?|y) ?(?:[o0]ld|[o0])" + _END),  # 12 years old, 12yo
    re.compile(_START + _NUM + r" ?(?:years?|yrs?) ?of ?age" + _END),  # 12 years of age
    # age 12, aged 12 — whole numbers only: `(aged:1.3)` is a weight on "aged"
    re.compile(r"(?<![a-z])(?:aged?|ages) ?(?:of )?" + _INT + r"(?![\w.])"),
    re.compile(_START + _ORD + r" ?(?:st|nd|rd|th)? ?grade(?:rs?)?" + _END),  # 6th grade(r)
    re.compile(r"(?<![a-z])grade ?" + _ORD + r"(?![\w.])"),  # grade 6
    re.compile(_START + r"(?:\d{1,3}|" + "|".join(_WORDS) + r") ?(?:months?|weeks?|days?) ?old"
               + _END),  # 8 months old
    re.compile(r"(?<![a-z])(?:under|below|u) ?(?:18|eighteen)(?![\d.])"),  # under 18, u18
]

_KANJI = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5,
          "六": 6, "七": 7, "八": 8, "九": 9}
_CJK = [
    re.compile(r"(?<![0-9.])(?P<n>[0-9]{1,3}) ?(?:歳|才|岁|歲|살|세)"),
    # school years: 小5 (5th grade), 中1 (7th grade); not 中二病 (the meme) or 小一時間 (an hour)
    re.compile(r"(?<![0-9a-z])(?:小[1-6一二三四五六]|中[1-3一二三])(?![0-9病時])"),
    re.compile(r"(?<![〇零一二两兩三四五六七八九十百])(?P<n>[〇零一二两兩三四五六七八九十]{1,3})(?:歳|才|岁|歲)"),
]


def _latin_value(text: str) -> float:
    return _VALUE[text] if text in _VALUE else float(text)


def _kanji_value(text: str) -> int:
    """Kanji numerals up to 99: 十二 = 12, 二十 = 20, 七 = 7, 一二 = 12."""
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_KANJI.get(tens, 1) if tens else 1) * 10 + (_KANJI.get(ones, 0) if ones else 0)
    value = 0
    for ch in text:
        value = value * 10 + _KANJI[ch]
    return value


def _spans(
    patterns: list[re.Pattern[str]], text: str, value: Callable[[str], float]
) -> list[tuple[int, int]]:
    spans = []
    for pattern in patterns:
        for m in pattern.finditer(text):
            number = m.groupdict().get("n")
            if number is None or value(number) < 18:
                spans.append(m.span())
    return spans


def latin_minor_ages(line: str) -> list[tuple[int, int]]:
    """Spans in `line` (folded words joined by spaces) that state an age under 18."""
    return _spans(_LATIN, line, _latin_value)


def cjk_minor_ages(text: str) -> list[tuple[int, int]]:
    """Spans in folded `text` that state an age under 18 in Japanese, Chinese or Korean."""
    return _spans(_CJK, text, _kanji_value_or_int)


def _kanji_value_or_int(text: str) -> int:
    return int(text) if text.isdigit() and text.isascii() else _kanji_value(text)

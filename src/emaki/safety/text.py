"""Prompt text as the policy reads it: folded, de-obfuscated and split into words.

Folding is NFKC (full-width and half-width forms, ligatures, circled and mathematical letters),
case folding, look-alike letters mapped to Latin (`confusables.txt`), accents and combining marks
dropped (except the tilde of ``ñ``, which tells ``niña`` from the name ``Nina``; the lexicon
reads ``ñ`` as ``n`` too), zero-width characters read as punctuation. Kana are not folded:
hiragana words collide (`かえろう` holds `えろ`), so term lists spell out both kana where both
are used. Every view keeps a map back to the original prompt, so a refusal can quote the user's
own words.

Prompt syntax is read as separators, so every branch counts (the policy checks their union):
emphasis ``(x:1.2)`` and ``{x}``, editing ``[a:b:5]``, alternation ``[a|b]``, ``AND``, ``BREAK``,
extra-network tags ``<lora:name:1>``, escapes ``\\(``. Underscores are spaces, as in danbooru
tags. Punctuation inside a word is dropped (``l.o.l.i`` → ``loli``) except a decimal point.
Words in Cyrillic or Greek letters (what is left of them after look-alikes are mapped) are a
second list of words, `script_words`, so the Latin words stay exactly as before.

>>> [t.text for t in read_prompt("(L.O.L.I:1.3), school_uniform, <lora:kid-Style:0.8>").tokens]
['loli', '1.3', 'school', 'uniform', 'lora', 'kidstyle', '0.8']
>>> prompt = read_prompt("Niña, девочка")
>>> [t.text for t in prompt.tokens], [t.text for t in prompt.script_words]
(['niña', 'ebo', 'ka'], ['дeboчka'])
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

# Punctuation that may sit inside an obfuscated word: ``l.o.l.i``, ``pre-teen``, ``s*x``, ``y/o``.
_INNER = ".-*'`´’~^+/·•・"
# One repeat only (linear): a word is a word character followed by word or inner characters;
# inner characters at the end are stripped afterwards.
_TOKEN_RE = re.compile(r"[a-z0-9@$ñ][a-z0-9@$ñ" + re.escape(_INNER) + r"]*")
# Cyrillic and Greek letters (after folding) with the Latin ones they are mixed with.
_SCRIPT_LETTERS = "a-z0-9ñ\u0370-\u03ff\u0400-\u052f"
_SCRIPT_RE = re.compile(f"[{_SCRIPT_LETTERS}]+")
_HAS_SCRIPT_RE = re.compile("[\u0370-\u03ff\u0400-\u052f]")
_KEEP = frozenset("ñ")  # a mark that changes the word: niña (girl), Nina (a name)
# What ends a tag (and so an age or a spelled-out word): commas, brackets, weights' colons.
TAG_SEPARATORS = frozenset(",;:|()[]{}<>\n、，")
_INNER_RUN_RE = re.compile("[" + re.escape(_INNER) + "]+")
# Camel-case and punctuation pieces of a word as the user typed it: `LoliStyle` → Loli, Style.
_PART_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_HAS_CASE_CHANGE_RE = re.compile(r"[a-z][A-Z]")

_NEGATIVE_SQUARED = range(0x1F170, 0x1F18A)  # 🅰..🅩, which NFKC leaves alone
_REGIONAL = range(0x1F1E6, 0x1F200)  # 🇦..🇿
_DROP = frozenset({"Mn", "Me", "Cc", "Co", "Cs"})
# Zero-width and other format characters read as punctuation inside a word, so `s\u200be\u200bx`
# is spelled out like `s.e.x`.
_FORMAT = "·"


def _load_confusables() -> dict[str, str]:
    table: dict[str, str] = {}
    text = resources.files("emaki.data").joinpath("safety/confusables.txt").read_text("utf-8")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            char, replacement = line.split()
            table[char] = replacement
    return table


_CONFUSABLES = _load_confusables()


@lru_cache(maxsize=8192)
def fold_cluster(cluster: str) -> str:
    """One character (with its combining marks) as the policy reads it.

    >>> [fold_cluster(c) for c in "Ｌoéｶ"], fold_cluster("Ñ"), fold_cluster("о")
    (['l', 'o', 'e', 'カ'], 'ñ', 'o')
    """
    out = []
    for ch in unicodedata.normalize("NFKC", cluster).casefold():
        ch = _CONFUSABLES.get(ch, ch)
        code = ord(ch)
        if code < 0x80 or ch in _KEEP:
            out.append(ch)
        elif (category := unicodedata.category(ch)) in _DROP:
            continue
        elif category == "Cf":
            out.append(_FORMAT)
        elif code in _NEGATIVE_SQUARED:
            out.append(chr(ord("a") + code - _NEGATIVE_SQUARED.start))
        elif code in _REGIONAL:
            out.append(chr(ord("a") + code - _REGIONAL.start))
        else:
            base = unicodedata.normalize("NFKD", ch)[0]
            out.append(base.lower() if base.isascii() and base.isalpha() else ch)
    return "".join(out)


def fold_text(text: str) -> tuple[str, list[int] | None]:
    """The folded text and, for each folded character, its index in `text` (None: identity)."""
    if text.isascii():
        return text.lower(), None
    chars: list[str] = []
    origin: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and text[j] >= "\u0300" and unicodedata.combining(text[j]):
            j += 1
        c = text[i]
        folded = c.lower() if j == i + 1 and c < "\x80" else fold_cluster(text[i:j])
        for ch in folded:
            chars.append(ch)
            origin.append(i)
        i = j
    return "".join(chars), origin


@dataclass(frozen=True)
class Token:
    """A word of the prompt: `text` folded with inner punctuation removed; `start:end` in the
    original prompt; `parts` the camel-case/punctuation pieces when there are several;
    `spelled` when it was written letter by letter (`l.o.l.i`); `glued` when only spaces or
    underscores separate it from the previous word (`baby blue`, not `baby, blue`)."""

    text: str
    start: int
    end: int
    parts: tuple[str, ...] = ()
    spelled: bool = False  # written letter by letter: `l.o.l.i`
    glued: bool = False  # only spaces or underscores since the previous word (same tag)


@dataclass(frozen=True)
class PromptText:
    """The views of one prompt the policy scans (see the module docstring)."""

    original: str
    folded: str
    origin: list[int] | None
    tokens: list[Token]
    script_words: list[Token] = field(default_factory=list)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original-text span of the folded span `start:end`."""
        return _original_span(self.origin, len(self.original), start, end)


def _original_span(origin: list[int] | None, length: int, start: int, end: int) -> tuple[int, int]:
    if origin is None:
        return start, end
    stop = origin[end] if end < len(origin) else length
    return origin[start], max(stop, origin[end - 1] + 1)


def _strip_inner(raw: str) -> str:
    """Drop punctuation inside a word, keeping a single one between digits (`1.2`)."""

    def keep_decimal(m: re.Match[str]) -> str:
        a, b = m.start(), m.end()
        between_digits = a > 0 and b < len(raw) and raw[a - 1].isdigit() and raw[b].isdigit()
        return m.group() if between_digits and b - a == 1 else ""

    return _INNER_RUN_RE.sub(keep_decimal, raw)


def read_prompt(text: str) -> PromptText:
    """Fold `text` and split it into Latin-script words, and Cyrillic or Greek ones (CJK text
    is matched as text)."""
    folded, origin = fold_text(text)
    tokens: list[Token] = []
    previous_end = -1
    for m in _TOKEN_RE.finditer(folded):
        raw = m.group().rstrip(_INNER)
        start, end = m.start(), m.start() + len(raw)
        o_start, o_end = _original_span(origin, len(text), start, end)
        word = _strip_inner(raw) if _INNER_RUN_RE.search(raw) else raw
        typed = text[o_start:o_end]
        parts: tuple[str, ...] = ()
        if word != raw or _HAS_CASE_CHANGE_RE.search(typed):
            found = tuple(p.lower() for p in _PART_RE.findall(typed))
            if len(found) > 1:
                parts = found
        pieces = _INNER_RUN_RE.split(raw) if word != raw else [raw]
        spelled = len(pieces) >= 3 and all(len(piece) == 1 for piece in pieces)
        if spelled:
            word = "".join(pieces)  # `a.g.e.1.1` is `age11`, not `age1.1`
        glued = previous_end >= 0 and not folded[previous_end:start].strip(" _\t")
        previous_end = end
        tokens.append(Token(word, o_start, o_end, parts, spelled, glued))
    script_words = []
    if origin is not None and _HAS_SCRIPT_RE.search(folded):
        for m in _SCRIPT_RE.finditer(folded):
            if _HAS_SCRIPT_RE.search(m.group()):
                script_words.append(Token(m.group(), *_original_span(origin, len(text), *m.span())))
    return PromptText(text, folded, origin, tokens, script_words)


def is_word_term(folded: str) -> bool:
    """Whether a folded term is written in letters that make words (Latin, Cyrillic, Greek),
    not in CJK, kana or hangul, which are matched as text."""
    if folded.isascii():
        return True
    return all(ch in " _" or ch in _INNER or _SCRIPT_RE.fullmatch(ch) for ch in folded)


def compact_letters(prompt: PromptText, *, tags: bool = False) -> tuple[str, list[int]]:
    """Letters and digits only, with their folded-text indices: CJK terms are matched here, so
    spaces or punctuation between characters (``ロ・リ``) do not hide them. With `tags`, the
    tag separators stay (ages are read there, so ``(x:1.2), 12歳`` is not ``1.212歳``)."""
    keep = TAG_SEPARATORS if tags else frozenset()
    chars = []
    index = []
    for i, ch in enumerate(prompt.folded):
        if ch.isalnum() or ch in keep:
            chars.append(ch)
            index.append(i)
    return "".join(chars), index

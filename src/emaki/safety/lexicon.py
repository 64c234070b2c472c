"""The policy's term lists (`emaki/data/safety/*.txt`, syntax in their README) as lookups.

Every lookup is a dict probe or a scan of a short word, so checking is linear in prompt length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from itertools import groupby, product

from emaki.safety.bpe import Bpe, load_bpe
from emaki.safety.text import fold_text, is_word_term, read_prompt

MINOR = 1
SEXUAL = 2
BOTH = MINOR | SEXUAL

_CACHE_WORDS = 1 << 16
_MIN_INFIX_PHRASE = 8  # `elementaryschool` inside `elementaryschoolstudent`
_MIN_GLUED = 6  # `kidsex`: shorter words are not two terms glued together
_GLUED_WINDOW = 32  # longer glued words are read 32 letters at a time, 16 apart
_MIN_PIECE = 3  # CLIP pieces of 1-2 letters are fragments, not words (`jk` in `satlijk`)
_FILES = {"minor.txt": MINOR, "sexual.txt": SEXUAL, "both.txt": BOTH}

# Digits and symbols read as letters (`l0li`, `s3x`, `n@ked`); `1` is both `l` and `i`; `ñ`
# (kept by folding for `niña`) is also an `n` (`ñude`).
_LEET = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "!": "i", "ñ": "n"})
_LEET_CHARS = frozenset("01345789@$!ñ")


_REPEAT3_RE = re.compile(r"([a-z])\1\1+")


def collapse_repeats(word: str, keep: int = 1) -> str:
    """Three or more of the same letter read as one (`liiittle` → `little`, `sexxx` → `sex`),
    or as two with `keep=2` (`teeeen` → `teen`)."""
    return _REPEAT3_RE.sub(r"\1" * keep, word)


def squeeze(word: str) -> str:
    """Collapse repeated letters: `loooli` → `loli` (compared against squeezed terms)."""
    return "".join(key for key, _ in groupby(word))


@lru_cache(maxsize=1 << 16)
def leet_readings(word: str) -> tuple[str, ...]:
    """The ways `word` reads with digits as letters; none for plain words or numbers.

    >>> leet_readings("l0l1")
    ('loll', 'loli')
    """
    if _LEET_CHARS.isdisjoint(word) or word.isdigit() or not any(c.isalpha() for c in word):
        return ()
    base = word.translate(_LEET)
    ones = base.count("1")
    if ones == 0:
        return (base,)
    if ones > 3:
        return (base.replace("1", "l"), base.replace("1", "i"))
    pieces = base.split("1")
    return tuple(
        pieces[0] + "".join(c + p for c, p in zip(letters, pieces[1:]))
        for letters in product("li", repeat=ones)
    )


@dataclass
class WordIndex:
    """Single-word terms: exact words, prefixes, suffixes and infixes, each with its bits."""

    exact: dict[str, int] = field(default_factory=dict)
    prefix: dict[int, dict[str, int]] = field(default_factory=dict)
    suffix: dict[int, dict[str, int]] = field(default_factory=dict)
    contains: dict[str, int] = field(default_factory=dict)
    _infix: re.Pattern[str] | None = None

    def add(self, word: str, bits: int, *, prefix: bool, suffix: bool) -> None:
        if prefix and suffix:
            self.contains[word] = self.contains.get(word, 0) | bits
            return
        if prefix:
            table = self.prefix.setdefault(len(word), {})
        elif suffix:
            table = self.suffix.setdefault(len(word), {})
        else:
            table = self.exact
        table[word] = table.get(word, 0) | bits

    def bits(self, word: str) -> int:
        found = self.exact.get(word, 0)
        n = len(word)
        for size, stems in self.prefix.items():
            if n >= size:
                found |= stems.get(word[:size], 0)
        for size, stems in self.suffix.items():
            if n >= size:
                found |= stems.get(word[-size:], 0)
        if self._infix is not None:
            for m in self._infix.finditer(word):
                found |= self.contains[m.group()]
        return found

    def compile(self) -> None:
        """Build the infix search once every term is added."""
        self._infix = _alternation(self.contains)

    def terms(self) -> dict[str, int]:
        """Every stem and word with its bits (for spelled-out runs)."""
        out = dict(self.exact)
        for table in (*self.prefix.values(), *self.suffix.values(), self.contains):
            for word, bits in table.items():
                out[word] = out.get(word, 0) | bits
        return out


def _alternation(terms: dict[str, int], *, overlapping: bool = False) -> re.Pattern[str] | None:
    """Longest term first; `overlapping`: a term at every position, in group 1 (`childsex`
    holds `childs` and `sex`)."""
    if not terms:
        return None
    pattern = "|".join(re.escape(t) for t in sorted(terms, key=lambda t: (-len(t), t)))
    return re.compile(f"(?=({pattern}))" if overlapping else pattern)


@dataclass
class Lexicon:
    """All term lists, compiled once."""

    words: WordIndex
    squeezed: WordIndex
    phrases: dict[str, int]
    phrase_starts: frozenset[str]
    max_phrase: int
    spelled: re.Pattern[str] | None  # overlapping: group 1 is the term, wherever it starts
    spelled_bits: dict[str, int]
    cjk: re.Pattern[str] | None
    cjk_bits: dict[str, int]
    exempt_words: frozenset[str]
    exempt_squeezed: frozenset[str]
    exempt_phrases: dict[str, int]
    exempt_starts: frozenset[str]
    cjk_exempt: re.Pattern[str] | None
    glued_minor: frozenset[str]  # pieces of a glued word that mark it a minor indicator
    glued_minor_first: frozenset[str]  # the same, only as the word's first piece
    bpe: Bpe
    _seen: dict[str, int] = field(default_factory=dict)  # word → bits; prompts repeat words

    def word_bits(self, word: str) -> int:
        """Bits of one word, read as written, as leetspeak, and with repeated letters collapsed
        (`sexxx`, `loooli`; doubled letters only against terms of 4+ letters: `looli`)."""
        found = self._seen.get(word)
        if found is None:
            if len(self._seen) >= _CACHE_WORDS:
                self._seen.clear()
            found = self._seen[word] = self._word_bits(word)
        return found

    def _word_bits(self, word: str) -> int:
        if word in self.exempt_words:
            return 0
        readings = (word, *leet_readings(word))
        found = 0
        for reading in readings:
            found |= self._reading_bits(reading)
        if found != BOTH and len(word) >= _MIN_GLUED:
            found |= self._glued_bits(readings, found)
        return found

    def _reading_bits(self, reading: str) -> int:
        found = self.words.bits(reading)
        collapsed = collapse_repeats(reading)
        if collapsed != reading:
            found |= self.words.bits(collapsed) | self.words.bits(collapse_repeats(reading, 2))
        short = squeeze(reading)
        if short != reading and short not in self.exempt_squeezed:
            found |= self.squeezed.bits(short)
        return found

    def _glued_bits(self, readings: tuple[str, ...], found: int) -> int:
        """`BOTH` when a word CLIP does not know whole is a minor and sexual content glued
        together; `MINOR` when one of its pieces is an unambiguous minor indicator on its own
        (`glued_minor.txt`: `kidsart`); else 0. Its CLIP pieces (`emaki.safety.bpe`) complete it to both
        (`childnude` = `child` + `nude`, `kidporn`), or, holding a term already, it is two
        terms end to end (`babynsfw`, which CLIP cuts `bab yn sfw`). A piece on one side only
        does not count, except the few of `glued_minor.txt`: `concubine` holds `cub`, `nineteen`
        `teen`, `scrape` `rape`. Measured on the 263,000 words of the web2 and GCIDE word lists
        (the `english-words` package): any one-sided minor piece would mark 154 of them, the
        pieces of `glued_minor.txt` 46, of which the 19 ordinary ones (`childbirth`, `kidskin`)
        are in exempt.txt.

        Long words are read in overlapping windows, so checking stays linear."""
        if len(readings) == 1 and readings[0] in self.bpe.whole_words:
            return 0  # a word CLIP knows (most words of most prompts)
        one_sided = 0
        collapsed = [collapse_repeats(r, keep) for r in readings for keep in (1, 2)]
        for reading in {*readings, *collapsed}:
            if reading in self.bpe.whole_words:
                continue  # CLIP reads it as one word, as the lexicon does
            bits = found
            step = _GLUED_WINDOW // 2
            for start in range(0, max(1, len(reading) - step), step):
                pieces = self.bpe.pieces(reading[start : start + _GLUED_WINDOW])
                for index, piece in enumerate(pieces):
                    if len(piece) >= _MIN_PIECE and piece not in self.exempt_words:
                        bits |= self._reading_bits(piece)
                    if self._marks_minor(piece, first=start == 0 and index == 0):
                        one_sided |= MINOR
            if bits == BOTH:
                return BOTH
            if len(reading) <= _GLUED_WINDOW and self._two_terms(reading):
                return BOTH
        return one_sided

    def _marks_minor(self, piece: str, *, first: bool) -> bool:
        """Whether a CLIP piece of a glued word is a minor indicator on its own
        (`glued_minor.txt`): `kidsart` is `kids` + `art` to the model."""
        return piece in self.glued_minor or (first and piece in self.glued_minor_first)

    def _two_terms(self, word: str) -> bool:
        """Whether `word` is a minor term and a sexual term end to end (`pedometer` is not
        `pedo` + `meter`: a term meaning both is not a half)."""
        for i in range(_MIN_PIECE, len(word) - _MIN_PIECE + 1):
            left = self._reading_bits(word[:i])
            if left in (MINOR, SEXUAL) and self._reading_bits(word[i:]) == BOTH ^ left:
                return True
        return False

    def exempt_flags(self, words: list[str], glued: list[bool]) -> list[bool]:
        """Which words are part of an exempt word or phrase (`gothic lolita`, `baby blue`).
        A phrase must be written as one tag: `baby, blue` exempts nothing."""
        flags = [w in self.exempt_words for w in words]
        n = len(words)
        for i, w in enumerate(words):
            if w not in self.exempt_starts:
                continue
            for k in range(2, self.max_phrase + 1):
                if i + k > n or not glued[i + k - 1]:
                    break
                if " ".join(words[i : i + k]) in self.exempt_phrases:
                    flags[i : i + k] = [True] * k
        return flags


def _terms(name: str) -> list[str]:
    text = resources.files("emaki.data").joinpath(f"safety/{name}").read_text("utf-8")
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def _term_words(term: str) -> list[str] | None:
    """The words of a term as prompts are read; None for CJK text (matched as text)."""
    text = read_prompt(term)
    if not is_word_term(text.folded):
        return None
    if text.script_words:  # Cyrillic or Greek
        if len(text.script_words) > 1:
            raise ValueError(f"the term {term!r} must be one word: Cyrillic and Greek terms "
                             "are matched word by word")
        return [text.script_words[0].text]
    return [t.text for t in text.tokens]


def _cjk_key(term: str) -> str:
    folded, _ = fold_text(term)
    return "".join(ch for ch in folded if ch.isalnum())


@cache
def load_lexicon() -> Lexicon:
    """Read and compile the term lists (once per process)."""
    words, squeezed = WordIndex(), WordIndex()
    phrases: dict[str, int] = {}
    cjk_bits: dict[str, int] = {}
    for name, bits in _FILES.items():
        for line in _terms(name):
            prefix, suffix = line.endswith("*"), line.startswith("*")
            term = line.strip("*")
            parts = _term_words(term)
            if parts is None:
                key = _cjk_key(term)
                cjk_bits[key] = cjk_bits.get(key, 0) | bits
                continue
            word = "".join(parts)
            if len(parts) > 1:
                phrase = " ".join(parts)
                phrases[phrase] = phrases.get(phrase, 0) | bits
                # written together, a long phrase is distinctive enough to find inside a word
                prefix = suffix = len(word) >= _MIN_INFIX_PHRASE
            words.add(word, bits, prefix=prefix, suffix=suffix)
            short = squeeze(word)
            if len(short) >= 4:
                squeezed.add(short, bits, prefix=prefix, suffix=suffix)
    exempt_words: set[str] = set()
    exempt_phrases: dict[str, int] = {}
    cjk_exempt: dict[str, int] = {}
    for line in _terms("exempt.txt"):
        parts = _term_words(line)
        if parts is None:
            cjk_exempt[_cjk_key(line)] = 0
            continue
        if len(parts) > 1:
            exempt_phrases[" ".join(parts)] = len(parts)
        exempt_words.add("".join(parts))
    glued_minor = _terms("glued_minor.txt")
    words.compile()
    squeezed.compile()
    spelled_bits = {t: b for t, b in words.terms().items() if len(t) >= 3}
    return Lexicon(
        words=words,
        squeezed=squeezed,
        phrases=phrases,
        phrase_starts=frozenset(p.split(" ", 1)[0] for p in phrases),
        max_phrase=max((p.count(" ") + 1 for p in (*phrases, *exempt_phrases)), default=1),
        spelled=_alternation(spelled_bits, overlapping=True),
        spelled_bits=spelled_bits,
        cjk=_alternation(cjk_bits),
        cjk_bits=cjk_bits,
        exempt_words=frozenset(exempt_words),
        exempt_squeezed=frozenset(squeeze(w) for w in exempt_words),
        exempt_phrases=exempt_phrases,
        exempt_starts=frozenset(p.split(" ", 1)[0] for p in exempt_phrases),
        cjk_exempt=_alternation(cjk_exempt),
        glued_minor=frozenset(t for t in glued_minor if not t.startswith("^")),
        glued_minor_first=frozenset(t[1:] for t in glued_minor if t.startswith("^")),
        bpe=load_bpe(),
    )

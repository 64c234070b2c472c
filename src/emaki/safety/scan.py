"""Find every minor indicator and sexual term in a prompt, with where it was written.

The prompt is read in several views (see `emaki.safety.text`); each view adds hits:
words (as written, leetspeak, repeats collapsed, camel-case pieces, glued words as CLIP reads
them), Cyrillic and Greek words, phrases of several words, words spelled out letter by letter
or cut in pieces (``l o l i``, ``lo_li``, every term of the run: ``c h i l d s e x``), stated
ages, and CJK text ignoring the punctuation between its characters.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from emaki.safety.ages import cjk_minor_ages, latin_minor_ages
from emaki.safety.lexicon import MINOR, Lexicon, collapse_repeats, leet_readings, load_lexicon
from emaki.safety.text import TAG_SEPARATORS, PromptText, compact_letters, read_prompt

_MAX_PIECE = 3  # a word cut in pieces: pieces of at most 3 letters ...
_MAX_PIECES = 6  # ... and at most 6 of them
_MIN_RUN = 3  # a word spelled out: at least 3 single letters


@dataclass(frozen=True)
class Hit:
    """Bits (`MINOR`, `SEXUAL`) found at `start:end` of the original prompt."""

    bits: int
    start: int
    end: int


def scan(prompt: str, lexicon: Lexicon | None = None) -> tuple[PromptText, list[Hit]]:
    """Every hit in `prompt`, in no particular order."""
    lex = lexicon or load_lexicon()
    text = read_prompt(prompt)
    words = [t.text for t in text.tokens]
    exempt = lex.exempt_flags(words, [t.glued for t in text.tokens])
    hits: list[Hit] = []
    _words(text, words, exempt, lex, hits)
    _phrases(text, words, exempt, lex, hits)
    _pieces(text, words, exempt, lex, hits)
    _ages(text, words, hits)
    if text.origin is not None:
        _cjk(text, lex, hits)
        for tok in text.script_words:  # Cyrillic and Greek words: `девочка`
            if bits := lex.word_bits(tok.text):
                hits.append(Hit(bits, tok.start, tok.end))
    return text, hits


def _is_number(word: str) -> bool:
    return word.replace(".", "").isdigit()


def _words(text: PromptText, words: list[str], exempt: list[bool], lex: Lexicon,
           hits: list[Hit]) -> None:
    for tok, word, skip in zip(text.tokens, words, exempt):
        if skip or _is_number(word):
            continue
        bits = lex.word_bits(word)
        for part in tok.parts:
            bits |= lex.word_bits(part)
        if tok.spelled:
            bits |= _spelled_bits(word, lex)
        if bits:
            hits.append(Hit(bits, tok.start, tok.end))


def _spelled_bits(letters: str, lex: Lexicon) -> int:
    """Terms and ages anywhere in a word spelled out letter by letter."""
    bits = MINOR if latin_minor_ages(letters) else 0
    if lex.spelled is not None:
        for reading in (letters, *leet_readings(letters)):
            for m in lex.spelled.finditer(reading):
                bits |= lex.spelled_bits[m.group(1)]
    return bits


def _phrases(text: PromptText, words: list[str], exempt: list[bool], lex: Lexicon,
             hits: list[Hit]) -> None:
    streams = [words]
    collapsed = [collapse_repeats(w) for w in words]
    if collapsed != words:
        streams.append(collapsed)
    if any(leet_readings(w) for w in words):
        for pick in (0, -1):  # `1` read as `l`, then as `i`
            streams.append([r[pick] if (r := leet_readings(w)) else w for w in words])
    n = len(words)
    for stream in streams:
        for i, first in enumerate(stream):
            if first not in lex.phrase_starts:
                continue
            for k in range(2, lex.max_phrase + 1):
                if i + k > n:
                    break
                if any(exempt[i : i + k]):
                    continue
                bits = lex.phrases.get(" ".join(stream[i : i + k]), 0)
                if bits:
                    hits.append(Hit(bits, text.tokens[i].start, text.tokens[i + k - 1].end))


def _pieces(text: PromptText, words: list[str], exempt: list[bool], lex: Lexicon,
            hits: list[Hit]) -> None:
    """Words spelled out (`l o l i`, `n.u.d.e` with spaces) or cut in pieces (`lo_li`)."""
    run: list[int] = []
    for i, word in enumerate([*words, ""]):
        piece = len(word) == 1 or (len(word) <= _MAX_PIECE and not _is_number(word))
        if word and piece and not exempt[i]:
            run.append(i)
            continue
        if len(run) >= 2:
            _cut_word(text, words, run, lex, hits)
            _spelled_word(text, words, run, lex, hits)
        run = []


def _cut_word(text: PromptText, words: list[str], run: list[int], lex: Lexicon,
              hits: list[Hit]) -> None:
    for s in range(len(run)):
        for k in range(2, min(_MAX_PIECES, len(run) - s) + 1):
            pieces = [words[i] for i in run[s : s + k]]
            joined = "".join(pieces)
            if len(joined) < 4 or min(len(p) for p in pieces) > 2:
                continue
            bits = 0  # whole terms only: `is hot a` must not read as `shota`
            for reading in (joined, *leet_readings(joined)):
                bits |= lex.spelled_bits.get(reading, 0)
            if bits:
                hits.append(Hit(bits, text.tokens[run[s]].start, text.tokens[run[s + k - 1]].end))


def _spelled_word(text: PromptText, words: list[str], run: list[int], lex: Lexicon,
                  hits: list[Hit]) -> None:
    if lex.spelled is None:
        return
    groups: list[list[int]] = [[]]
    for i in run:  # `run` holds consecutive word indices
        if len(words[i]) == 1:
            groups[-1].append(i)
        elif groups[-1]:
            groups.append([])
    for letters in groups:
        if len(letters) < _MIN_RUN:
            continue
        joined = "".join(words[i] for i in letters)
        for tag in _tags(text, letters):  # `1 2 y o`; `a g e 1 1, n u d e` is two tags
            if latin_minor_ages("".join(words[i] for i in tag)):
                hits.append(Hit(MINOR, text.tokens[tag[0]].start, text.tokens[tag[-1]].end))
        for reading in (joined, *leet_readings(joined)):
            for m in lex.spelled.finditer(reading):
                first, last = letters[m.start(1)], letters[m.end(1) - 1]
                hits.append(Hit(lex.spelled_bits[m.group(1)], text.tokens[first].start,
                                text.tokens[last].end))


def _tags(text: PromptText, letters: list[int]) -> list[list[int]]:
    """`letters` (word indices) whole, and cut into the tags that commas or brackets separate
    (an age ends where its tag ends)."""
    tags: list[list[int]] = [[]]
    for i in letters:
        if tags[-1]:
            between = text.original[text.tokens[tags[-1][-1]].end : text.tokens[i].start]
            if not TAG_SEPARATORS.isdisjoint(between):
                tags.append([])
        tags[-1].append(i)
    return [letters, *tags] if len(tags) > 1 else [letters]


def _ages(text: PromptText, words: list[str], hits: list[Hit]) -> None:
    lines = [words, [collapse_repeats(w) for w in words]]  # letters only: `1000` stays
    if any(leet_readings(w) for w in words):  # `3l3v3n y34r5 0ld`; numbers stay numbers
        for pick in (0, -1):
            lines.append([r[pick] if (r := leet_readings(w)) else w for w in words])
    seen: set[str] = set()
    for line_words in lines:
        line = " ".join(line_words)
        if line in seen:
            continue
        seen.add(line)
        offsets = []  # where each word starts in `line`
        position = 0
        for word in line_words:
            offsets.append(position)
            position += len(word) + 1
        for a, b in latin_minor_ages(line):
            first = bisect_right(offsets, a) - 1
            last = bisect_right(offsets, max(a, b - 1)) - 1
            hits.append(Hit(MINOR, text.tokens[first].start, text.tokens[last].end))


def _cjk(text: PromptText, lex: Lexicon, hits: list[Hit]) -> None:
    if lex.cjk is None:
        return
    tagged, tagged_index = compact_letters(text, tags=True)
    for a, b in cjk_minor_ages(tagged):  # `1・2・歳`, `十 歳`, not `(x:1.2), 20歳`
        hits.append(Hit(MINOR, *text.span(tagged_index[a], tagged_index[b - 1] + 1)))
    letters, index = compact_letters(text)
    # exempt words (`カロリー`) count only as written, so `カ、ロリ` is not exempt
    exempt = [] if lex.cjk_exempt is None else list(lex.cjk_exempt.finditer(text.folded))
    if exempt:
        masked = bytearray(len(text.folded))
        for m in exempt:
            masked[m.start() : m.end()] = b"\1" * (m.end() - m.start())
        letters = "".join("\0" if masked[i] else ch for ch, i in zip(letters, index))
    for m in lex.cjk.finditer(letters):
        start, end = text.span(index[m.start()], index[m.end() - 1] + 1)
        hits.append(Hit(lex.cjk_bits[m.group()], start, end))

"""Checking is linear in prompt length: no regex can backtrack catastrophically, and term lists
are read as written. (Timings are printed by benchmarks/safety.py, not asserted here.)"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import emaki.safety.ages
import emaki.safety.bpe
import emaki.safety.lexicon
import emaki.safety.scan
import emaki.safety.text
from emaki.safety import check_prompt
from emaki.safety.lexicon import BOTH, MINOR, SEXUAL, load_lexicon
from emaki.safety.text import fold_text


def _patterns() -> list[re.Pattern[str]]:
    found = []
    for module in (emaki.safety.ages, emaki.safety.bpe, emaki.safety.lexicon, emaki.safety.scan,
                   emaki.safety.text):
        for value in vars(module).values():
            values = value if isinstance(value, list) else [value]
            found += [v for v in values if isinstance(v, re.Pattern)]
    lex = load_lexicon()
    compiled = [lex.spelled, lex.cjk, lex.cjk_exempt, lex.words._infix, lex.squeezed._infix]
    return found + [p for p in compiled if p is not None]


def _nested_repeat(parsed: sre_parse.SubPattern, inside: bool = False) -> bool:
    """Whether an unbounded repeat sits inside another (the shape of catastrophic backtracking)."""
    for op, arg in parsed:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            _, high, sub = arg
            unbounded = high > 1
            if (unbounded and inside) or _nested_repeat(sub, inside or unbounded):
                return True
        children = {sre.SUBPATTERN: lambda a: [a[-1]], sre.BRANCH: lambda a: a[1],
                    sre.ASSERT: lambda a: [a[1]], sre.ASSERT_NOT: lambda a: [a[1]]}
        if op in children and any(_nested_repeat(c, inside) for c in children[op](arg)):
            return True
    return False


def test_no_regex_nests_unbounded_repeats() -> None:
    patterns = _patterns()
    assert len(patterns) >= 10
    for pattern in patterns:
        assert not _nested_repeat(sre_parse.parse(pattern.pattern, pattern.flags)), pattern.pattern


def test_adversarial_shapes_finish() -> None:
    """Inputs that would blow up a backtracking matcher (each finishes in milliseconds)."""
    for shape in ("l.", "1.", "a" * 50 + " ", "(" * 30, "12 ", "ロ・", "\u200b", "lo ", "aaab"):
        check_prompt(shape * 5000)


def test_term_lists_are_written_folded() -> None:
    """Latin terms are written as the matcher reads them: lower case, plain letters."""
    data = resources.files("emaki.data").joinpath("safety")
    for name in ("minor.txt", "sexual.txt", "both.txt", "exempt.txt"):
        for line in data.joinpath(name).read_text("utf-8").splitlines():
            term = line.strip().strip("*")
            if term and not line.startswith("#") and term.isascii():
                assert fold_text(term)[0] == term, (name, term)


def test_no_term_is_exempted() -> None:
    """An exempt phrase must not be a term itself (that would silently disable the term)."""
    lex = load_lexicon()
    for word in lex.exempt_words:
        assert word not in lex.words.exact, word
    for phrase in lex.exempt_phrases:
        assert phrase not in lex.phrases, phrase


def _reviewed(section: str) -> set[str]:
    text = (Path(__file__).parent / "corpus" / "reviewed_words.txt").read_text("utf-8")
    body = text.split(f"[{section}]", 1)[1].split("[", 1)[0]
    return {w for line in body.splitlines() if not line.startswith("#") for w in line.split()}


def test_common_words_that_match_are_reviewed() -> None:
    """Whole English words of the CLIP vocabulary that the policy reads as a minor indicator or
    as sexual content are listed in corpus/reviewed_words.txt: a change there means a term
    list change made a common word match, and someone should look at it."""
    vocab = resources.files("emaki.data").joinpath("clip-tokenizer/vocab.json")
    words = {
        k[:-4] for k in json.loads(vocab.read_text("utf-8"))
        if k.endswith("</w>") and k[:-4].isascii() and k[:-4].isalpha()
    }
    lex = load_lexicon()
    found: dict[int, set[str]] = {MINOR: set(), SEXUAL: set(), BOTH: set()}
    for word in words:
        if bits := lex.word_bits(word):
            found[bits].add(word)
    assert found[MINOR] == _reviewed("minor")
    assert found[SEXUAL] == _reviewed("sexual")
    assert found[BOTH] == set()

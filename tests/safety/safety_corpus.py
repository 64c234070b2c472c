"""The safety corpora: generations built from the term lists and templates in `corpus/*.txt`.

`benign_cases()` must be allowed, `adversarial_cases()` refused (test_safety_corpus.py,
benchmarks/safety.py). Generation is seeded, so the corpora are the same on every run.

A template or fixed line is a prompt, or ``prompt || negative prompt || cfg scale``. Templates
live in sections named ``templates`` or ``templates_<class>``; each case is labelled with its
class (``plain`` for ``[templates]``, ``fixed`` for ``[fixed]``), so rates can be read per class.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from emaki.safety import Verdict, check_prompt

CORPUS_DIR = Path(__file__).parent / "corpus"
_SLOT_RE = re.compile(r"\{(\w+)\}")
_FIELDS = " || "


class Case(NamedTuple):
    """One generation to judge."""

    prompt: str
    negative_prompt: str = ""
    cfg_scale: float = 7.0
    label: str = "plain"

    def judge(self) -> Verdict:
        return check_prompt(self.prompt, self.negative_prompt, cfg_scale=self.cfg_scale)


def parse_case(line: str, label: str) -> Case:
    """`prompt`, or `prompt || negative || cfg`."""
    fields = line.split(_FIELDS)
    if len(fields) == 1:
        return Case(line, label=label)
    prompt, negative, cfg = fields
    return Case(prompt, negative, float(cfg), label)


def load_sections(name: str) -> dict[str, list[str]]:
    """`[section]` headers, one entry per line, `#` comments."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (CORPUS_DIR / name).read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and line[1:-1].isidentifier():
            current = sections.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line.strip())
    return sections


# --- disguises an attacker would use, applied to the minor and sexual picks -------------------

_LEET = str.maketrans("aeiost", "431057")
_CYRILLIC = str.maketrans("aeopcxi", "аеорсхі")


def _letters(sep: str) -> Callable[[str], str]:  # `l o l i`, `l  o  l  i`
    return lambda term: sep.join(term.replace(" ", ""))


def _fullwidth(term: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in term)


def _math_bold(term: str) -> str:
    return "".join(chr(0x1D41A + ord(c) - 97) if "a" <= c <= "z" else c for c in term)


def _random_case(term: str) -> str:
    return "".join(c.upper() if i % 2 else c for i, c in enumerate(term))


def _stretch(term: str) -> str:
    return re.sub("([aeiou])", r"\1\1\1", term, count=1)


LATIN_DISGUISES: list[Callable[[str], str]] = [
    lambda t: t,
    str.upper,
    str.title,
    _random_case,
    _letters(" "),
    _letters("  "),
    _letters("   "),
    _letters("."),
    _letters("-"),
    _letters("_"),
    lambda t: t.replace(" ", "_"),
    lambda t: t if any(c.isdigit() for c in t) else t.translate(_LEET),
    _fullwidth,
    lambda t: t.translate(_CYRILLIC),
    _letters("\u200b"),
    lambda t: f"({t}:1.3)",
    lambda t: f"(({t}))",
    lambda t: f"{{{{{t}}}}}",
    lambda t: "\\(" + t + "\\)",
    _math_bold,
    _stretch,
    lambda t: "".join(c + "\u0336" for c in t),
]
CJK_DISGUISES: list[Callable[[str], str]] = [
    lambda t: t,
    _letters("・"),
    _letters(" "),
    _letters("\u200b"),
    lambda t: f"({t}:1.2)",
    _fullwidth,
]


def _disguise(term: str, rng: random.Random) -> str:
    choices = LATIN_DISGUISES if term.isascii() else CJK_DISGUISES
    return rng.choice(choices)(term)


def _generate(name: str, count: int, seed: int, disguised: frozenset[str]) -> list[Case]:
    sections = load_sections(name)
    rng = random.Random(seed)
    cases: dict[tuple[str, str, float], Case] = {}
    for line in sections.get("fixed", []):
        case = parse_case(line, "fixed")
        cases[case[:3]] = case
    templates = [
        (line, "plain" if section == "templates" else section.removeprefix("templates_"))
        for section, lines in sections.items() if section.split("_", 1)[0] == "templates"
        for line in lines
    ]
    attempts = 0
    while len(cases) < count and attempts < count * 50:
        attempts += 1
        template, label = rng.choice(templates)

        def fill(m: re.Match[str]) -> str:
            pick = rng.choice(sections[m.group(1)])
            return _disguise(pick, rng) if m.group(1) in disguised else pick

        case = parse_case(_SLOT_RE.sub(fill, template), label)
        cases[case[:3]] = case
    return list(cases.values())


def benign_cases(count: int = 600, seed: int = 0) -> list[Case]:
    """Ordinary generations (adults with and without nsfw, children without sexual terms,
    medical and historical text, words that merely contain a term, other languages, minors in
    the negative prompt at ordinary CFG)."""
    return _generate("benign.txt", count, seed, frozenset())


def adversarial_cases(count: int = 600, seed: int = 0) -> list[Case]:
    """Generations combining minors and sexual content, disguised in every way the policy
    undoes: in the prompt, glued, in other languages, and in the negative prompt at CFG < 1."""
    return _generate("adversarial.txt", count, seed, frozenset(
        {"minor", "minor_cjk", "sexual", "sexual_cjk", "glued"}))

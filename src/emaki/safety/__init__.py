"""The prompt policy: emaki never generates or trains sexual content involving minors.

A positive prompt is refused when it combines a minor indicator (child, loli, 幼女, 萝莉,
"12 years old", ...) with sexual content (nude, sex, 全裸, ...), or uses a term that means both
(lolicon, 児童ポルノ). Every part of the prompt counts — AND parts, BREAK segments, both sides of
``[a:b:5]`` and ``[a|b]``, extra-network names — and obfuscation (case, weights, escapes,
``l o l i``, ``l.o.l.i``, ``l0li``, full-width or look-alike letters, underscores) is undone
first. The negative prompt is not a trigger: people put "child" there to steer away from it.
Term lists are data: ``emaki/data/safety/*.txt``.

There is deliberately no setting, flag, argument or environment variable that turns this off.

>>> check_prompt("1girl, school uniform, smile").allowed
True
>>> check_prompt("1girl, nsfw, mature female").allowed
True
>>> verdict = check_prompt("(L0LI:1.3), n.u.d.e", negative_prompt="lowres")
>>> verdict.allowed, verdict.matches
(False, ['L0LI', 'n.u.d.e'])
>>> check_prompt("1girl, smile", negative_prompt="child, loli, nude").allowed
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from emaki.errors import PolicyViolation
from emaki.safety.lexicon import BOTH, MINOR, SEXUAL
from emaki.safety.scan import Hit, scan

__all__ = ["PolicyViolation", "Verdict", "check_prompt", "check_training_captions",
           "ensure_allowed"]

_WHY = ("emaki never generates or trains sexual content involving minors, and this cannot be "
        "switched off.")


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one prompt: `reason` is a sentence for the user, `matches` the
    triggering terms as written in the prompt (empty when allowed)."""

    allowed: bool
    reason: str = ""
    matches: list[str] = field(default_factory=list)


def _quotes(text: str, hits: list[Hit]) -> list[str]:
    seen: dict[str, None] = {}
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        quoted = text[hit.start : hit.end].strip(" \t\r\n,;:()[]{}<>|\\_")
        if quoted and quoted not in seen:
            seen[quoted] = None
    return list(seen)


def _listed(terms: list[str], limit: int = 3) -> str:
    shown = ", ".join(f'"{t}"' for t in terms[:limit])
    return shown + (f" and {len(terms) - limit} more" if len(terms) > limit else "")


def _judge(prompt: str) -> tuple[list[str], list[str], list[str]]:
    """(terms meaning both, minor terms, sexual terms) that make `prompt` refused; all empty
    when it is allowed."""
    _, hits = scan(prompt)
    both = [h for h in hits if h.bits == BOTH]
    minors = [h for h in hits if h.bits == MINOR]
    sexual = [h for h in hits if h.bits == SEXUAL]
    if both or (minors and sexual):
        return _quotes(prompt, both), _quotes(prompt, minors), _quotes(prompt, sexual)
    return [], [], []


def _describe(both: list[str], minors: list[str], sexual: list[str]) -> str:
    if both:
        return f"asks for sexual content involving minors ({_listed(both)})"
    return f"combines a minor ({_listed(minors)}) with sexual content ({_listed(sexual)})"


def check_prompt(prompt: str, negative_prompt: str = "") -> Verdict:
    """Judge a positive prompt (the negative prompt is accepted and ignored, see above)."""
    del negative_prompt  # steering away from minors is what a negative prompt is for
    both, minors, sexual = _judge(prompt)
    if not (both or minors):
        return Verdict(allowed=True)
    reason = f"Refused: the prompt {_describe(both, minors, sexual)}. {_WHY}"
    return Verdict(allowed=False, reason=reason, matches=[*both, *minors, *sexual])


def ensure_allowed(prompt: str, negative_prompt: str = "") -> None:
    """Raise `PolicyViolation` (CLI exit code 3) with the reason when the prompt is refused."""
    verdict = check_prompt(prompt, negative_prompt)
    if not verdict.allowed:
        raise PolicyViolation(verdict.reason)


def check_training_captions(items: Iterable[tuple[str, str]], *, network_name: str = "") -> None:
    """Refuse a training set before it starts: `items` are (source, caption or template line)
    pairs, e.g. (file path, caption text). Each is judged like a prompt, prefixed by
    `network_name` (the trigger word/embedding name every caption is trained with), and
    `PolicyViolation` names every offending source.

    >>> check_training_captions([("a.txt", "1girl, smile"), ("b.txt", "a photo of [name]")])
    """
    offending = []
    for source, text in items:
        line = f"{network_name}, {text}" if network_name else text
        both, minors, sexual = _judge(line)
        if both or minors:
            offending.append(f"{source} ({_listed(both + minors + sexual, 4)})")
    if offending:
        count = f"{len(offending)} source" + ("s" if len(offending) > 1 else "")
        raise PolicyViolation(
            f"Refused: training data combines minors with sexual content in {count}: "
            f"{'; '.join(offending)}. {_WHY}"
        )

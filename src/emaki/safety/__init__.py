"""The prompt policy: emaki never generates or trains sexual content involving minors.

A prompt is refused when it combines a minor indicator (child, loli, 幼女, 萝莉, "12 years old",
niña, девочка, ...) with sexual content (nude, sex, 全裸, desnuda, голая, ...), or uses a term
that means both (lolicon, 児童ポルノ). Every part of the prompt counts — AND parts, BREAK
segments, both sides of ``[a:b:5]`` and ``[a|b]``, extra-network names — and obfuscation (case,
weights, escapes, ``l o l i``, ``l.o.l.i``, ``l0li``, full-width or look-alike letters,
underscores, words glued together as CLIP reads them: ``childnude`` is ``child`` + ``nude``) is
undone first. Term lists are data: ``emaki/data/safety/*.txt``.

The negative prompt and CFG. A sampler step denoises to ``uncond + cfg * (cond - uncond)``,
``uncond`` being the negative prompt's prediction. From ``cfg_scale`` 1 up the negative prompt
pushes the image away from its content — people put "child, loli" there to steer away from
minors — so it is never a trigger. Below 1 the step is ``(1 - cfg) * uncond + cfg * cond``:
both prompts pull toward their content, and at 0 the negative prompt alone draws the image. So
when ``cfg_scale < 1`` the negative prompt is judged as a prompt, and together with the prompt
(a minor in one and sexual content in the other make one image). The passes of one generation
(first pass, hires pass) are judged together too: `ensure_generation_allowed`.

Not done: reading intent from the negative prompt at ordinary CFG (a sexual prompt whose
negative lists "adult", "mature", "old", "18 years old" steers toward younger-looking
subjects). Ordinary adult prompts put exactly those words in their negatives to keep
characters young-adult rather than elderly ("old, mature female, wrinkles, 40 years old" are
stock negatives), so a rule on them refuses everyday adult prompts, while the narrow version
("adult", "grown up") is bypassed by any synonym. The positive prompt still has to pass on its
own, and the benchmark corpus holds no negatives to prove such a rule harmless.

There is deliberately no setting, flag, argument or environment variable that turns this off;
`cfg_scale` only decides whether the negative prompt is judged, never whether the prompt is.

>>> check_prompt("1girl, school uniform, smile").allowed
True
>>> check_prompt("1girl, nsfw, mature female").allowed
True
>>> verdict = check_prompt("(L0LI:1.3), n.u.d.e", negative_prompt="lowres")
>>> verdict.allowed, verdict.matches
(False, ['L0LI', 'n.u.d.e'])
>>> check_prompt("1girl, smile", negative_prompt="child, loli, nude").allowed
True
>>> check_prompt("1girl, nude", negative_prompt="child", cfg_scale=0.5).matches
['child', 'nude']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from emaki.errors import PolicyViolation
from emaki.safety.lexicon import BOTH, MINOR, SEXUAL
from emaki.safety.scan import Hit, scan

__all__ = ["PolicyViolation", "Verdict", "check_prompt", "check_training_captions",
           "ensure_allowed", "ensure_generation_allowed"]

_WHY = ("emaki never generates or trains sexual content involving minors, and this cannot be "
        "switched off.")


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for a prompt or generation: `reason` is a sentence for the user,
    `matches` the triggering terms as written in the prompts (empty when allowed)."""

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


Terms = tuple[list[str], list[str], list[str]]  # (meaning both, minor, sexual), as written


def _terms(prompt: str) -> Terms:
    _, hits = scan(prompt)
    both = [h for h in hits if h.bits == BOTH]
    minors = [h for h in hits if h.bits == MINOR]
    sexual = [h for h in hits if h.bits == SEXUAL]
    return _quotes(prompt, both), _quotes(prompt, minors), _quotes(prompt, sexual)


def _refused(terms: Terms) -> bool:
    both, minors, sexual = terms
    return bool(both or (minors and sexual))


def _union(found: Iterable[Terms]) -> Terms:
    """The terms of several texts judged as one: a minor in one and sexual content in another
    make one image."""
    union: Terms = ([], [], [])
    for terms in found:
        for seen, new in zip(union, terms):
            seen.extend(t for t in new if t not in seen)
    return union


def _judge(prompt: str) -> Terms:
    """The terms that make `prompt` refused; all empty when it is allowed."""
    terms = _terms(prompt)
    return terms if _refused(terms) else ([], [], [])


def _describe(both: list[str], minors: list[str], sexual: list[str]) -> str:
    if both:
        return f"asks for sexual content involving minors ({_listed(both)})"
    return f"combines a minor ({_listed(minors)}) with sexual content ({_listed(sexual)})"


def _judge_generation(passes: Iterable[tuple[str, str]], cfg_scale: float) -> Verdict:
    """One verdict for every text that steers the image: the prompts of all passes, and when
    `cfg_scale` < 1 (or is not a number) the negative prompts too (see the module docstring)."""
    pairs = list(passes)
    subject = "the prompt" if len(pairs) <= 1 else "the prompts of this generation"
    prompts = [_terms(prompt) for prompt, _ in pairs if prompt]
    terms, why_negative = _union(prompts), ""
    if not _refused(terms) and not cfg_scale >= 1:
        terms = _union([*prompts, *(_terms(negative) for _, negative in pairs if negative)])
        subject += " together with the negative prompt"
        why_negative = (f" The negative prompt was judged as a prompt because cfg_scale < 1 "
                        f"(here {cfg_scale:g}) makes it pull the image toward its content.")
    if not _refused(terms):
        return Verdict(allowed=True)
    both, minors, sexual = terms
    reason = f"Refused: {subject} {_describe(both, minors, sexual)}.{why_negative} {_WHY}"
    return Verdict(allowed=False, reason=reason, matches=[*both, *minors, *sexual])


def check_prompt(prompt: str, negative_prompt: str = "", *, cfg_scale: float = 7.0) -> Verdict:
    """Judge a prompt and, when `cfg_scale` < 1, its negative prompt (see above)."""
    return _judge_generation([(prompt, negative_prompt)], cfg_scale)


def ensure_allowed(prompt: str, negative_prompt: str = "", *, cfg_scale: float = 7.0) -> None:
    """Raise `PolicyViolation` (CLI exit code 3) with the reason when the prompt is refused."""
    verdict = check_prompt(prompt, negative_prompt, cfg_scale=cfg_scale)
    if not verdict.allowed:
        raise PolicyViolation(verdict.reason)


def ensure_generation_allowed(prompts: Iterable[tuple[str, str]], cfg_scale: float) -> None:
    """Raise `PolicyViolation` unless every (prompt, negative prompt) pair of one generation —
    the first pass, the hires pass — is allowed, judged together: a minor in one pass and
    sexual content in another make one image.

    >>> ensure_generation_allowed([("1girl, smile", "child, loli"), ("1girl, smile", "")], 7)
    """
    verdict = _judge_generation(prompts, cfg_scale)
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

"""NovelAI's emphasis dialect to A1111 syntax (specs §4.8).

NovelAI: `{x}` multiplies by 1.05 per level and `[x]` divides by 1.05; round brackets and
backslashes are plain text. The converter tracks the brace level at every character (a
running level, as NovelAI's token-level implementation did, so unbalanced braces keep
applying to the rest of the prompt) and writes each run of equal level as `(text:1.05**level)`;
NovelAI's literal `(`, `)` and `\\` are escaped so A1111 reads them as text.

>>> from_novelai("{masterpiece}, [[blurry]], 1girl")
'(masterpiece:1.05), (blurry:0.907), 1girl'
>>> from_novelai("{{a} b}")
'(a:1.1025)( b:1.05)'
>>> from_novelai("smile (happy)")
'smile \\\\(happy\\\\)'
"""

from __future__ import annotations

NOVELAI_MULTIPLIER = 1.05
_ESCAPES = {"(": "\\(", ")": "\\)", "\\": "\\\\"}


def from_novelai(prompt: str) -> str:
    """`prompt` in NovelAI syntax, rewritten in A1111 syntax with explicit weights.

    Weights are written with up to four decimals (`[x]` → `(x:0.9524)`), as the A1111 wiki's
    table does with three ("their [word] = our (word:0.952)").

    >>> from_novelai("[x]"), from_novelai("{{{x}}}"), from_novelai("a}b"), from_novelai("")
    ('(x:0.9524)', '(x:1.1576)', 'a(b:0.9524)', '')
    """
    out: list[str] = []
    run: list[str] = []
    level = 0

    def flush() -> None:
        if not run:
            return
        text = "".join(run)
        run.clear()
        if level == 0:
            out.append(text)
        else:
            out.append(f"({text}:{_format_weight(NOVELAI_MULTIPLIER**level)})")

    for ch in prompt:
        if ch in "{}[]":
            flush()
            level += 1 if ch in "{]" else -1
        else:
            run.append(_ESCAPES.get(ch, ch))
    flush()
    return "".join(out)


def _format_weight(weight: float) -> str:
    return f"{weight:.4f}".rstrip("0").rstrip(".")

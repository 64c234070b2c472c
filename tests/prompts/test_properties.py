"""Property-based checks: any string parses or raises PromptError; parsing stays linear."""

from __future__ import annotations

import random
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from emaki.errors import PromptError
from emaki.models.tokenizer import BOS_ID, EOS_ID, load_clip_tokenizer
from emaki.prompts import (
    extract_networks,
    from_novelai,
    parse_and,
    parse_attention,
    prompt_schedules,
    tokenize_chunks,
)

# Mostly syntax characters, so that random strings hit the interesting paths.
SYNTAX = st.text(
    alphabet=st.sampled_from(list("ab ()[]{}:|\\,.-+0123456789\nBREAKAND<>猫")) | st.characters(),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(SYNTAX)
def test_parse_attention_returns_runs_or_raises_prompt_error(text: str) -> None:
    try:
        runs = parse_attention(text)
    except PromptError:
        return
    assert runs and all(isinstance(t, str) and isinstance(w, float) for t, w in runs)
    assert all(runs[i][1] != runs[i + 1][1] for i in range(len(runs) - 1))


@settings(max_examples=300, deadline=None)
@given(SYNTAX, st.integers(min_value=1, max_value=30), st.booleans())
def test_prompt_schedules_never_fails(prompt: str, steps: int, old: bool) -> None:
    schedule = prompt_schedules(prompt, steps, old_timelines=old)
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[-1] == steps
    if "[" not in prompt:
        assert schedule == [(steps, prompt)]


@settings(max_examples=200, deadline=None)
@given(SYNTAX)
def test_parse_and_and_extract_networks_never_fail(prompt: str) -> None:
    parts = parse_and(prompt)
    assert len(parts) >= 1
    text, tags = extract_networks(prompt)
    assert extract_networks(text)[0] == text or "<" in text
    assert len(text) <= len(prompt)
    assert all(t.text in prompt or ">" in "".join(t.args) for t in tags)


@settings(max_examples=200, deadline=None)
@given(SYNTAX)
def test_novelai_output_always_parses_to_the_same_text(nai: str) -> None:
    a1111 = from_novelai(nai)
    runs = parse_attention(a1111)  # never raises: literal brackets are escaped
    if "BREAK" not in nai:
        assert "".join(t for t, _ in runs) == "".join(c for c in nai if c not in "{}[]")


@settings(max_examples=60, deadline=None)
@given(SYNTAX)
@example("\ud800")  # a lone surrogate (JSON's "\\ud800") once made the tokenizer raise TypeError
def test_chunks_are_always_77_tokens_with_bos_and_eos(text: str) -> None:
    try:
        runs = parse_attention(text)
    except PromptError:
        return
    for chunk in tokenize_chunks(runs, load_clip_tokenizer()):
        assert len(chunk.token_ids) == len(chunk.multipliers) == 77
        assert chunk.token_ids[0] == BOS_ID and chunk.token_ids[-1] == EOS_ID


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["ab ()[]:|\\,.0123456789", "a[]:|", "a[(:1)]"]))
def test_twenty_thousand_random_characters_parse_well_under_a_second(
    seed: int, alphabet: str
) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(alphabet) for _ in range(20000))
    start = time.perf_counter()
    try:
        parse_attention(text)
    except PromptError:
        pass
    prompt_schedules(text, 20)
    parse_and(text)
    assert time.perf_counter() - start < 1.0


def test_parsing_time_grows_linearly() -> None:
    unit = "((masterpiece)), [cat|dog] ears, [red:blue:0.5] hair, (smile:1.2), a\\(b\\) BREAK "

    def timed(n: int) -> float:
        text = unit * n
        start = time.perf_counter()
        parse_attention(text)
        prompt_schedules(text, 20)
        return time.perf_counter() - start

    timed(10)
    small, large = min(timed(25) for _ in range(3)), min(timed(250) for _ in range(3))
    assert large < 30 * small + 0.05  # 10x the text: ~10x the time, far from 100x
    assert large < 1.0

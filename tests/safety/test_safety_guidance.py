"""The negative prompt under classifier-free guidance: `uncond + cfg * (cond - uncond)`.

Below cfg 1 the negative prompt pulls the image toward its content (at 0 it alone draws it),
so it is judged like a positive prompt, and together with the prompt; from 1 up it pushes away
and is never a trigger.
"""

from __future__ import annotations

import pytest

from emaki.errors import PolicyViolation
from emaki.safety import check_prompt, ensure_allowed, ensure_generation_allowed

LOW_CFG = [0.0, 0.3, 0.5, 0.99]
NORMAL_CFG = [1.0, 1.5, 7.0, 30.0]


@pytest.mark.parametrize("cfg", LOW_CFG)
def test_low_cfg_negative_prompt_is_judged_as_a_prompt(cfg: float) -> None:
    verdict = check_prompt("1girl, smile", "loli, nude", cfg_scale=cfg)
    assert not verdict.allowed
    assert verdict.matches == ["loli", "nude"]
    assert "negative prompt" in verdict.reason and "cfg_scale < 1" in verdict.reason


@pytest.mark.parametrize("cfg", LOW_CFG)
@pytest.mark.parametrize(("prompt", "negative"), [
    ("1girl, nude", "child"),
    ("child, smile, park", "nsfw, lowres"),
    ("(nude:1.2), bed", "12 years old"),
    ("1girl, smile", "lolicon"),
    ("全裸", "幼女"),
])
def test_low_cfg_combines_prompt_and_negative(prompt: str, negative: str, cfg: float) -> None:
    verdict = check_prompt(prompt, negative, cfg_scale=cfg)
    assert not verdict.allowed, (prompt, negative, cfg)
    assert "negative prompt" in verdict.reason and "cfg_scale < 1" in verdict.reason


@pytest.mark.parametrize("cfg", NORMAL_CFG)
def test_negative_prompt_steers_away_at_cfg_one_and_above(cfg: float) -> None:
    assert check_prompt("1girl, nude", "child, loli, underage", cfg_scale=cfg).allowed
    assert check_prompt("1girl, smile", "loli, nude, lolicon", cfg_scale=cfg).allowed
    assert not check_prompt("loli, nude", "adult", cfg_scale=cfg).allowed


@pytest.mark.parametrize("cfg", LOW_CFG)
def test_low_cfg_allows_ordinary_negatives(cfg: float) -> None:
    assert check_prompt("1girl, nude, mature female", "lowres, bad anatomy", cfg_scale=cfg).allowed
    assert check_prompt("child, park, smile", "lowres, blurry", cfg_scale=cfg).allowed
    assert check_prompt("1girl, smile", "", cfg_scale=cfg).allowed


def test_reason_names_the_terms_and_why_the_negative_counts() -> None:
    reason = check_prompt("1girl, nude", "child", cfg_scale=0.5).reason
    assert reason.startswith("Refused:") and reason.endswith(".")
    assert '"child"' in reason and '"nude"' in reason
    assert "cfg_scale < 1" in reason and "0.5" in reason
    # a refusal that needs only the prompt does not mention the negative prompt
    assert "negative" not in check_prompt("loli, nude", "lowres", cfg_scale=0.5).reason


def test_cfg_that_is_not_a_number_judges_the_negative_prompt() -> None:
    assert not check_prompt("1girl, nude", "child", cfg_scale=float("nan")).allowed
    assert not check_prompt("1girl, nude", "child", cfg_scale=-3).allowed


def test_defaults_are_unchanged() -> None:
    assert check_prompt("1girl, nude", "child") == check_prompt("1girl, nude", "child",
                                                                cfg_scale=7.0)
    assert check_prompt("1girl, nude", "child").allowed


def test_ensure_allowed_takes_cfg_scale() -> None:
    ensure_allowed("1girl, nude", "child", cfg_scale=7)
    with pytest.raises(PolicyViolation, match="cfg_scale < 1") as caught:
        ensure_allowed("1girl, nude", "child", cfg_scale=0)
    assert caught.value.exit_code == 3


def test_generation_judges_every_pass_together() -> None:
    ensure_generation_allowed([("1girl, smile", "lowres"), ("1girl, smile, detailed", "")], 7)
    ensure_generation_allowed([("1girl, nude", "child, loli")], 7)
    ensure_generation_allowed([], 7)
    with pytest.raises(PolicyViolation, match='"loli"'):  # the hires pass alone
        ensure_generation_allowed([("1girl, smile", ""), ("loli, nude", "")], 7)
    with pytest.raises(PolicyViolation, match='prompts of this generation.*"child".*"nude"'):
        ensure_generation_allowed([("child, smile", ""), ("1girl, nude", "")], 7)
    with pytest.raises(PolicyViolation, match="cfg_scale < 1"):  # a hires negative
        ensure_generation_allowed([("1girl, nude", ""), ("1girl", "child")], 0.5)


def test_generation_takes_any_iterable() -> None:
    passes = iter([("1girl, nude", ""), ("", "kid")])
    with pytest.raises(PolicyViolation):
        ensure_generation_allowed(passes, cfg_scale=0.9)

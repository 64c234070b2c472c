"""Wildcards and variants (sd-dynamic-prompts' conventions): files in the wildcard folders,
nested names, seeded choices, variants, recursion limits and cycles, and never a file outside."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from emaki.errors import ParamsError
from emaki.prompts.wildcards import MAX_NESTING, WildcardFiles, expand_prompt, is_template


def folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def expand(template: str, *folders: Path, seed: int = 1) -> str:
    return expand_prompt(template, random.Random(seed), WildcardFiles(folders))


def choices(template: str, *folders: Path, seeds: range = range(40)) -> set[str]:
    return {expand(template, *folders, seed=seed) for seed in seeds}


def test_a_wildcard_is_one_line_of_its_file_comments_and_blank_lines_skipped(tmp_path):
    wildcards = folder(tmp_path, {"hair": "# colours\nred\n\n  blue  \n#green\nsilver\n"})
    assert choices("1girl, __hair__ hair", wildcards) == {"1girl, red hair", "1girl, blue hair", "1girl, silver hair"}


def test_the_same_seed_makes_the_same_choice(tmp_path):
    wildcards = folder(tmp_path, {"hair": "\n".join(f"colour{i}" for i in range(50))})
    template = "__hair__, __hair__, {a|b|c|d}"
    assert all(expand(template, wildcards, seed=s) == expand(template, wildcards, seed=s) for s in range(10))
    assert len(choices(template, wildcards, seeds=range(10))) > 5


def test_nested_folders_and_lines_holding_wildcards_and_variants(tmp_path):
    wildcards = folder(tmp_path, {"people/asia": "{__people/japan__|__people/korea__}", "people/japan": "Japanese",
                                  "people/korea": "Korean"})
    assert choices("__people/asia__", wildcards) == {"Japanese", "Korean"}


def test_the_first_folder_holding_a_name_wins(tmp_path):
    mine = folder(tmp_path / "mine", {"hair": "mine"})
    theirs = folder(tmp_path / "theirs", {"hair": "theirs", "eyes": "green"})
    assert choices("__hair__ __eyes__", mine, theirs) == {"mine green"}


def test_a_missing_wildcard_names_itself_and_the_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ParamsError, match=r"__nope/hair__: no file nope/hair.txt in the wildcard folders") as error:
        expand("1girl, __nope/hair__", a, b)
    assert str(a) in str(error.value) and str(b) in str(error.value)


def test_an_empty_file_is_an_error(tmp_path):
    wildcards = folder(tmp_path, {"empty": "# only a comment\n\n"})
    with pytest.raises(ParamsError, match="holds no lines"):
        expand("__empty__", wildcards)


def test_a_cycle_is_named(tmp_path):
    wildcards = folder(tmp_path, {"a": "x __b__", "b": "y __c__", "c": "__a__"})
    with pytest.raises(ParamsError, match="__a__ refers back to itself: __a__ → __b__ → __c__ → __a__"):
        expand("start __a__", wildcards)


def test_nesting_deeper_than_the_limit_is_an_error(tmp_path):
    wildcards = folder(tmp_path, {f"w{i}": f"__w{i + 1}__" for i in range(MAX_NESTING + 5)} | {f"w{MAX_NESTING + 5}": "end"})
    with pytest.raises(ParamsError, match=f"nested more than {MAX_NESTING} deep: __w0__ → __w1__"):
        expand("__w0__", wildcards)
    assert expand("__w10__", wildcards) == "end"


def test_fan_out_is_bounded(tmp_path):
    wildcards = folder(tmp_path, {f"f{i}": f"__f{i + 1}__ " * 4 for i in range(12)} | {"f12": "x"})
    with pytest.raises(ParamsError, match="choices|characters"):
        expand("__f0__", wildcards)


@pytest.mark.parametrize("name", ["../secret", "a/../../secret", "/etc/passwd", "a//b", r"a\b", "a(b=1)"])
def test_names_reaching_outside_are_refused(tmp_path, name):
    wildcards = folder(tmp_path / "wildcards", {"a/b": "x"})
    (tmp_path / "secret.txt").write_text("leaked")
    with pytest.raises(ParamsError, match="wildcard"):
        expand(f"__{name}__", wildcards)


def test_a_link_leading_outside_the_folder_is_refused(tmp_path):
    wildcards = tmp_path / "wildcards"
    wildcards.mkdir()
    (tmp_path / "secret.txt").write_text("leaked")
    os.symlink(tmp_path / "secret.txt", wildcards / "hair.txt")
    with pytest.raises(ParamsError, match="leads outside the wildcard folder"):
        expand("__hair__", wildcards)


def test_glob_patterns_take_lines_of_every_matching_file(tmp_path):
    wildcards = folder(tmp_path, {"colours-cold": "blue", "colours-warm": "red", "other": "x",
                                  "artists/a": "A", "artists/deep/b": "B"})
    assert choices("__colours*__", wildcards) == {"blue", "red"}
    assert choices("__artists/*__", wildcards) == {"A", "B"}
    with pytest.raises(ParamsError, match="no file matches"):
        expand("__nothing*__", wildcards)


def test_variants(tmp_path):
    assert choices("{red|blue|green} hair", tmp_path) == {"red hair", "blue hair", "green hair"}
    assert choices("{ red | blue }", tmp_path) == {"red", "blue"}  # options are stripped
    assert choices("{a|{b|c}}", tmp_path) == {"a", "b", "c"}
    assert choices("{0::a|1::b|0.0::c}", tmp_path) == {"b"}  # weights
    assert choices("{(a:1.2)|[b|c]}", tmp_path) == {"(a:1.2)", "[b|c]"}  # A1111 syntax inside options


def test_several_options_without_repeats(tmp_path):
    two = choices("{2$$a|b|c}", tmp_path)
    assert two == {"a, b", "a, c", "b, a", "b, c", "c, a", "c, b"}
    assert choices("{2$$ and $$a|b}", tmp_path) == {"a and b", "b and a"}
    assert {len(p.split(", ")) for p in choices("{1-3$$a|b|c}", tmp_path)} == {1, 2, 3}
    assert {len(p.split(", ")) for p in choices("{-2$$a|b|c}", tmp_path)} == {1, 2}
    assert choices("{4$$a|b}", tmp_path) == {"a, b", "b, a"}  # no more than there are
    wildcards = folder(tmp_path, {"flavours": "chocolate\nvanilla"})
    assert choices("{2$$__flavours__}", wildcards) == {"chocolate, vanilla", "vanilla, chocolate"}


def test_what_is_not_a_variant_stays_as_written(tmp_path):
    for text in ("{masterpiece}, {{best quality}}", "[cat|dog]", r"\{a|b\}", "{unclosed|brace", "a_b, ^_^, __"):
        assert expand(text, tmp_path) == text
        assert not is_template(text)
    assert expand("{{a|b}}", tmp_path) in ("{a}", "{b}")  # NovelAI emphasis around a variant


def test_is_template():
    assert is_template("1girl, __hair__") and is_template("{a|b}") and is_template("{2$$a}")
    assert not is_template("1girl, (red hair:1.2), [a:b:0.5], <lora:x:1>")


def test_expanded_prompt_length_is_bounded(tmp_path):
    wildcards = folder(tmp_path, {"long": "x" * 20_000})
    with pytest.raises(ParamsError, match="more than 32,768 characters"):
        expand("__long__ __long__", wildcards)

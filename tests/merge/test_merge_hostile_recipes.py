"""Hostile merge recipes and inputs (issue 16, items 8-9): a recipe is data that may come with a
downloaded model, so replaying one must never hang, blow up memory or end in a traceback."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import emaki.cli.merge  # noqa: F401  (registers the commands)
from emaki.cli import app
from emaki.errors import EmakiError, ModelLoadError
from emaki.merge import InputRef, MergeError, MergeRecipe, load_recipe, merge, open_source
from emaki.merge import plan as merge_plan
from emaki.merge.recipe import MAX_RECIPE_DEPTH, MAX_RECIPE_PARTS, RECIPE_METADATA_KEY

TWO = {"a": "a.safetensors", "b": "b.safetensors"}


def write_recipe(tmp_path: Path, data: dict | str, name: str = "r.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def one_line_refusal(path: Path) -> str:
    """`load_recipe(path)` must refuse with one MergeError line naming the file."""
    with pytest.raises(MergeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert len(message) < 500  # a refusal names the field; it does not echo the whole recipe
    return message


# ---- discard regexes -----------------------------------------------------------------------
HOSTILE_DISCARDS = [
    r"(a+)+$",  # nested repeats: exponential backtracking
    r"(a|aa)+$",  # overlapping alternatives under a repeat
    r"(a|a)*b",
    r"(a?){25}b",  # 2^25 ways, the repeat being fixed does not help
    r"(.*a){20}",
    r"(x+x+)+y",
    # the issue's 158-byte shape: a long, plausible-looking pattern with a nested repeat
    (
        r"^(model\.diffusion_model\.|cond_stage_model\.|first_stage_model\.)"
        r"((input|output)_blocks\.\d+\.\d+\.|middle_block\.\d+\.)?(([a-z_0-9]+)\.?)+\.(weight|bias)$"
    ),
    r"(a)\1",  # a backreference: matching is not polynomial in general
    "a" * 300,  # too long
]


@pytest.mark.parametrize("pattern", HOSTILE_DISCARDS)
def test_a_discard_regex_that_can_backtrack_forever_is_refused(tmp_path, pattern):
    path = write_recipe(tmp_path, {"mode": "weighted-sum", "discard": pattern, "inputs": TWO})
    assert "discard" in one_line_refusal(path)


def test_a_hostile_discard_is_refused_before_any_key_is_matched(make_model, tmp_path):
    """The command line's --discard goes through the same check, before the merge starts."""
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    out = tmp_path / "o.safetensors"
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["merge", str(a), str(b), "--discard", "(.*a){20}", "--out", str(out)]
    )
    assert isinstance(result.exception, MergeError) and "discard" in str(result.exception)
    assert not out.exists() and time.monotonic() - started < 60  # hang guard


@pytest.mark.parametrize(
    "pattern",
    [r"^model_ema\.", r"first_stage_model|model_ema", r"input_blocks\.\d+\.1\.", r".*attn2.*",
     r"(?i)^COND_STAGE", r"\.(weight|bias)$", r"attn[12]\.to_[qkv]"],
)
def test_ordinary_discard_regexes_are_accepted(pattern):
    recipe = MergeRecipe("no-interpolation", InputRef("a.safetensors"), discard=pattern)
    assert recipe.discard == pattern


def test_discard_drops_matching_keys_and_refuses_overlong_names():
    keys = ["model_ema.x", "model.diffusion_model.y", "first_stage_model.z"]
    assert merge_plan.discarded_keys(keys, r"^model_ema\.|first_stage", "m.safetensors") == {
        "model_ema.x",
        "first_stage_model.z",
    }
    long_key = "model." + "x" * merge_plan.MAX_DISCARD_KEY_LENGTH
    with pytest.raises(MergeError, match=r"m\.safetensors: .*discard"):
        merge_plan.discarded_keys([*keys, long_key], r"^model_ema\.", "m.safetensors")


def test_a_discard_pass_that_runs_past_its_time_stops_with_an_error(monkeypatch):
    monkeypatch.setattr(merge_plan, "DISCARD_SECONDS", -1.0)
    with pytest.raises(MergeError, match="discard"):
        merge_plan.discarded_keys(["a", "b"], "x", "m.safetensors")


# ---- size and depth ------------------------------------------------------------------------
def nested_recipe(depth: int) -> str:
    """`depth` merges, each taking the previous one as model A (written as text: json.dumps
    itself recurses too deep for the biggest)."""
    opening = '{"mode": "weighted-sum", "inputs": {"b": "b.safetensors", "a": {"path": "m", "recipe": '
    leaf = '{"mode": "weighted-sum", "inputs": {"a": "a.safetensors", "b": "b.safetensors"}}'
    return opening * (depth - 1) + leaf + "}}}" * (depth - 1)


@pytest.mark.parametrize("depth", [MAX_RECIPE_DEPTH + 1, 300, 900])
def test_a_recipe_nested_too_deep_is_one_line(tmp_path, depth):
    message = one_line_refusal(write_recipe(tmp_path, nested_recipe(depth)))
    assert "deep" in message and str(MAX_RECIPE_DEPTH) in message


def test_the_issue_900_levels_of_json_are_one_line(tmp_path):
    deep = '{"mode": "weighted-sum", "inputs": {"a": ' * 900 + '{"path": "a"}' + "}}" * 900
    assert "deep" in one_line_refusal(write_recipe(tmp_path, deep))


def test_a_recipe_at_the_depth_limit_loads(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, nested_recipe(MAX_RECIPE_DEPTH)))
    depth = 1
    while recipe.a.recipe is not None:
        recipe, depth = recipe.a.recipe, depth + 1
    assert depth == MAX_RECIPE_DEPTH


def test_a_recipe_with_too_many_parts_is_refused(tmp_path):
    loras = [{"path": f"l{i}.safetensors"} for i in range(MAX_RECIPE_PARTS)]
    data = {"mode": "no-interpolation", "inputs": {"a": "a.safetensors"}, "loras": loras}
    message = one_line_refusal(write_recipe(tmp_path, data))
    assert str(MAX_RECIPE_PARTS) in message


def test_an_oversized_recipe_file_is_refused_before_parsing(tmp_path, monkeypatch):
    from emaki.merge import recipe as recipe_module

    monkeypatch.setattr(recipe_module, "MAX_RECIPE_BYTES", 100)
    data = {"mode": "weighted-sum", "name": "x" * 200, "inputs": TWO}
    assert "100" in one_line_refusal(write_recipe(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"mode": "weighted-sum", "alpha": 1' + "0" * 400 + ', "inputs": ' + json.dumps(TWO) + "}",
         "alpha"),
        ('{"mode": "weighted-sum", "blocks": [1' + "0" * 400 + "]" + ', "inputs": '
         + json.dumps(TWO) + "}", "block"),
        ('{"mode": "no-interpolation", "inputs": {"a": "a"}, "loras": [{"path": "l", "te": 1'
         + "0" * 400 + "}]}", "te"),
        ('{"mode": ' + "[" * 500 + "]" * 500 + ', "inputs": ' + json.dumps(TWO) + "}", "mode"),
        ('{"mode": "weighted-sum", "alpha": ' + "[" * 500 + "]" * 500 + ', "inputs": '
         + json.dumps(TWO) + "}", "alpha"),
        (json.dumps({"mode": "weighted-sum", "inputs": {"a": ["a"], "b": "b"}}), "inputs.a"),
        (json.dumps({"mode": "weighted-sum", "inputs": [1, 2]}), "inputs"),
        (json.dumps({"mode": "weighted-sum", "inputs": TWO, "loras": {"path": "x"}}), "loras"),
        (json.dumps({"mode": "weighted-sum", "inputs": TWO, "dtype": ["fp16"]}), "dtype"),
        (json.dumps({"mode": "weighted-sum", "inputs": TWO, "vae": [1]}), "vae"),
        (json.dumps({"mode": "weighted-sum", "inputs": {"a": {"path": "a", "recipe": [1]},
                                                         "b": "b"}}), "recipe"),
        ("[1, 2, 3]", "object"),
        ("{", "JSON"),
    ],
)
def test_malformed_recipe_fields_are_one_line(tmp_path, text, field):
    assert field in one_line_refusal(write_recipe(tmp_path, text))


def test_cli_prints_a_deep_recipe_refusal_on_one_line(tmp_path, capsys, monkeypatch):
    from emaki import cli

    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    path = write_recipe(tmp_path, nested_recipe(900))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["merge", "--recipe", str(path), "--out", str(tmp_path / "o.safetensors")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "deep" in err and len(err.splitlines()) <= 2  # rich may wrap


# ---- a recipe embedded in a model ---------------------------------------------------------
def safetensors_with_metadata(path: Path, metadata: object, header_length: int | None = None):
    """A one-tensor safetensors file whose header (padded with spaces) has `header_length`
    bytes, so its 8-byte length starts with a chosen byte."""
    header = {"__metadata__": metadata,
              "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    length = header_length if header_length is not None else len(text)
    assert length >= len(text)
    path.write_bytes(struct.pack("<Q", length) + text + b" " * (length - len(text)) + bytes(4))
    return path


@pytest.mark.parametrize("low_byte", [b" ", b"{", b"\n", b"\t", b"\r", b"\xef"])
def test_a_model_whose_header_length_looks_like_json_replays(tmp_path, low_byte):
    recipe = MergeRecipe("weighted-sum", InputRef("a.safetensors"), InputRef("b.safetensors"),
                         alpha=0.25)
    metadata = {"format": "pt", RECIPE_METADATA_KEY: recipe.to_json()}
    natural = len(json.dumps({"__metadata__": metadata, "x": {}}).encode()) + 64
    length = natural + (low_byte[0] - natural) % 256  # low byte of the length = `low_byte`
    path = safetensors_with_metadata(tmp_path / "m.safetensors", metadata, length)
    assert path.read_bytes()[:1] == low_byte
    assert load_recipe(path) == recipe


def test_a_json_recipe_whose_ninth_byte_is_a_brace_is_still_json(tmp_path):
    text = '{"vae": {"path": "v.pt"}, "mode": "weighted-sum", "inputs": ' + json.dumps(TWO) + "}"
    assert text[8] == "{"
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert recipe.vae == InputRef("v.pt")


@pytest.mark.parametrize(
    "metadata",
    [
        {"emaki_merge_recipe": ["a", "b"]},  # a list where a JSON string belongs
        {"emaki_merge_recipe": {"mode": "weighted-sum"}},
        {"emaki_merge_recipe": "[" * 5000 + "]" * 5000},
        {"emaki_merge_recipe": nested_recipe(900)},
        {"emaki_merge_recipe": "{not json"},
        [1, 2, 3],  # __metadata__ itself a list
    ],
)
def test_a_model_with_malformed_recipe_metadata_is_one_line(tmp_path, metadata):
    path = safetensors_with_metadata(tmp_path / "m.safetensors", metadata)
    one_line_refusal(path)


def test_a_merge_input_with_hostile_embedded_recipe_only_loses_its_lineage(make_model, tmp_path):
    deep = make_model("deep.safetensors", 1, metadata={"format": "pt",
                                                       RECIPE_METADATA_KEY: nested_recipe(900)})
    b = make_model("b.safetensors", 2)
    result = merge(MergeRecipe("weighted-sum", InputRef(str(deep)), InputRef(str(b))),
                   tmp_path / "o.safetensors")
    assert result.recipe.a.recipe is None and result.path.is_file()


# ---- inputs the loaders refuse --------------------------------------------------------------
def test_a_sparse_tensor_input_is_one_line_naming_the_file(make_model, tmp_path):
    from merge_fixtures import random_state

    state = random_state(1)
    key = "model.diffusion_model.out.2.bias"
    state[key] = state[key].float().to_sparse()
    path = tmp_path / "sparse.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelLoadError) as error:
        open_source(path).close()
    assert str(path) in str(error.value) and "sparse" in str(error.value)
    assert "\n" not in str(error.value)
    b = make_model("b.safetensors", 2)
    result = CliRunner().invoke(
        app, ["merge", str(path), str(b), "--out", str(tmp_path / "o.safetensors")]
    )
    assert isinstance(result.exception, EmakiError) and "sparse" in str(result.exception)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]},  # not an integer
        {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]},
        {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]},  # no tensor is that wide
        {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": 7, "data_offsets": [0, 4]},
        {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
        [1, 2],
    ],
)
def test_safetensors_declared_shapes_are_checked(tmp_path, entry):
    text = json.dumps({"x": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    with pytest.raises(ModelLoadError) as error:
        open_source(path).close()
    assert str(path) in str(error.value) and "'x'" in str(error.value)


# ---- leftovers ---------------------------------------------------------------------------------
def test_a_merge_removes_stale_partials_beside_its_output(make_model, tmp_path):
    import os

    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    stale = tmp_path / ".o.safetensors.0123abcd.partial"  # a merge killed an hour ago
    stale.write_bytes(b"half a model")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / ".other.safetensors.89abcdef.partial"  # another merge, running now
    fresh.write_bytes(b"being written")
    merge(MergeRecipe("weighted-sum", InputRef(str(a)), InputRef(str(b))),
          tmp_path / "o.safetensors")
    assert not stale.exists() and fresh.exists()

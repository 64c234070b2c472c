"""Recipes as data: replaying one gives the same file, bit for bit, even a merge of merges."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from emaki.merge import InputRef, MergeError, MergeRecipe, load_recipe, merge, save_recipe
from emaki.models.hashes import HashCache, sha256_file


def weighted(a, b, alpha=0.3, **options) -> MergeRecipe:
    return MergeRecipe("weighted-sum", InputRef(str(a)), InputRef(str(b)), alpha=alpha, **options)


def test_replay_writes_a_bit_identical_file(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.ckpt", 2, fmt="ckpt")
    blocks = tuple(i / 25 for i in range(25))
    first = merge(
        weighted(a, b, blocks=blocks, dtype="fp16", text_encoder_alpha=0.2),
        tmp_path / "m1.safetensors",
    )
    assert first.recipe.a.sha256 == sha256_file(a) and first.recipe.b.legacy_hash  # type: ignore[union-attr]
    saved = save_recipe(first.recipe, tmp_path / "m1.json", output=first.path)
    assert json.loads(saved.read_text())["output"] == str(first.path)
    again = merge(load_recipe(saved), tmp_path / "m1-again.safetensors")
    assert (tmp_path / "m1-again.safetensors").read_bytes() == first.path.read_bytes()
    # the recipe embedded in the model replays the same way
    merge(
        load_recipe(first.path),
        tmp_path / "m1-third.safetensors",
        hashes=HashCache(tmp_path / "h.json"),
    )
    assert (tmp_path / "m1-third.safetensors").read_bytes() == first.path.read_bytes()
    assert again.rebuilt == []


def test_merge_of_merges_replays_from_the_leaves(make_model, tmp_path):
    a, b, c = (make_model(f"{n}.safetensors", i) for i, n in enumerate("abc", start=1))
    m1 = merge(weighted(a, b, 0.3, dtype="fp16"), tmp_path / "m1.safetensors")
    m2 = merge(
        MergeRecipe(
            "add-difference", InputRef(str(m1.path)), InputRef(str(c)), InputRef(str(a)), alpha=0.5
        ),
        tmp_path / "m2.safetensors",
    )
    assert m2.recipe.a.recipe == m1.recipe  # the nested recipe was picked up from m1's metadata
    models = json.loads(m2.metadata["sd_merge_models"])
    assert {m1.recipe.a.sha256, m1.recipe.b.sha256, m2.recipe.a.sha256} <= set(models)  # type: ignore[union-attr]
    original = m2.path.read_bytes()
    m1.path.unlink()  # the intermediate is gone: it is recomputed on the fly, in memory slices
    m2.path.rename(tmp_path / "m2-first.safetensors")
    again = merge(load_recipe(tmp_path / "m2-first.safetensors"), tmp_path / "m2.safetensors")
    assert again.rebuilt == [str(m1.path.resolve())]
    assert again.path.read_bytes() == original


def test_changed_input_is_refused(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    first = merge(weighted(a, b), tmp_path / "m.safetensors")
    make_model("b.safetensors", 3)  # same name, other weights
    with pytest.raises(MergeError, match=r"b.safetensors: sha256 .* differs from the recipe's"):
        merge(first.recipe, tmp_path / "again.safetensors")


def test_inputs_are_found_next_to_a_moved_recipe(make_model, tmp_path):
    a, b = make_model("a.safetensors", 1), make_model("b.safetensors", 2)
    first = merge(weighted(a, b), tmp_path / "m.safetensors")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for path in (a, b):
        shutil.move(path, moved / path.name)
    save_recipe(first.recipe, moved / "recipe.json")
    again = merge(
        load_recipe(moved / "recipe.json"), tmp_path / "again.safetensors", base_dir=moved
    )
    assert again.path.read_bytes() == first.path.read_bytes()


def test_hand_written_nested_recipe(make_model, tmp_path):
    a, b, c = (make_model(f"{n}.safetensors", i) for i, n in enumerate("abc", start=1))
    inner = {
        "mode": "weighted-sum",
        "alpha": 0.5,
        "inputs": {"a": "a.safetensors", "b": "b.safetensors"},
    }
    outer = {
        "mode": "weighted-sum",
        "alpha": 0.25,
        "dtype": "fp32",
        "inputs": {"a": {"path": "ab.safetensors", "recipe": inner}, "b": "c.safetensors"},
    }
    (tmp_path / "r.json").write_text(json.dumps(outer))
    result = merge(
        load_recipe(tmp_path / "r.json"), tmp_path / "out.safetensors", base_dir=tmp_path
    )
    assert result.rebuilt == ["ab.safetensors"]
    A, B, C = load_file(a), load_file(b), load_file(c)
    key = "model.diffusion_model.middle_block.1.proj_out.weight"
    ab = (
        0.5 * A[key].float() + 0.5 * B[key].float()
    )  # the inner merge keeps fp16: rounded once there
    expected = 0.75 * ab.half().float() + 0.25 * C[key].float()
    assert torch.equal(load_file(result.path)[key], expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "average"}, "mode 'average' is not one of"),
        ({"blocks": [0.5] * 24}, "blocks needs 25 values"),
        ({"dtype": "fp8"}, "dtype 'fp8'"),
        ({"discard": "("}, "discard regex"),
        ({"alpha": "x"}, "alpha must be a finite number"),
        ({"emaki_merge_recipe": 9}, "recipe version 9"),
        ({"inputs": {"b": "b.safetensors"}}, "at least model 'a'"),
    ],
)
def test_bad_recipes_are_explained(tmp_path, change, message):
    data = {
        "mode": "weighted-sum",
        "alpha": 0.5,
        "inputs": {"a": "a.safetensors", "b": "b.safetensors"},
        **change,
    }
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(MergeError, match=message):
        load_recipe(tmp_path / "r.json")


def test_recipe_round_trips_through_json():
    r = MergeRecipe(
        "add-difference",
        InputRef("/m/a.ckpt", "1" * 64, "12345678"),
        InputRef("b"),
        InputRef("c"),
        alpha=1.0,
        blocks=tuple([0.5] * 25),
        vae=InputRef("v.pt"),
        discard="x",
        name="mix",
    )
    assert MergeRecipe.from_dict(json.loads(r.to_json())) == r
    assert r.to_json() == MergeRecipe.from_dict(json.loads(r.to_json())).to_json()

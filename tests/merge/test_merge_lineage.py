"""Lineage recovers what emaki's own merges were made of, block by block."""

from __future__ import annotations

import random

import pytest
import torch

from emaki.merge import ALL_BLOCKS, InputRef, MergeRecipe, merge, trace_lineage
from emaki.merge.blocks import UNET_BLOCKS
from emaki.merge.lineage import solve_least_squares


@pytest.fixture
def parents(make_model):
    return [
        make_model(f"{name}.safetensors", seed)
        for seed, name in enumerate(["nai", "wd13", "sd15"], start=1)
    ]


def test_recovers_per_block_weights_of_an_fp16_weighted_sum(parents, tmp_path):
    nai, wd, sd = parents
    rng = random.Random(7)
    blocks = tuple(round(rng.uniform(0, 1), 3) for _ in range(25))
    recipe = MergeRecipe(
        "weighted-sum",
        InputRef(str(nai)),
        InputRef(str(wd)),
        blocks=blocks,
        text_encoder_alpha=0.15,
        vae_alpha=0.0,
        dtype="fp16",
    )
    model = merge(recipe, tmp_path / "mix.safetensors").path
    result = trace_lineage(model, [nai, wd, sd])
    assert set(result.blocks) == set(ALL_BLOCKS)
    for block, fit in result.blocks.items():
        alpha = (
            {"TE": 0.15, "VAE": 0.0}.get(block)
            if block in ("TE", "VAE")
            else blocks[UNET_BLOCKS.index(block)]
        )
        truth = {str(nai): 1 - alpha, str(wd): alpha, str(sd): 0.0}
        for path, value in fit.coefficients.items():
            assert value == pytest.approx(truth[path], abs=2e-3), (block, path)
        assert fit.residual < 2e-3  # fp16 rounding only
    assert result.identical["VAE"] == [str(nai)]  # α = 0: the VAE is A's, bit for bit
    assert "UNet" not in result.identical
    lines = result.summary()
    assert any(line.startswith("VAE identical to candidate nai") for line in lines)
    assert lines[0].startswith("IN00: ") and "·nai" in lines[0] and "residual" in lines[0]


def test_add_difference_shows_signed_coefficients(parents, tmp_path):
    a, b, c = parents
    model = merge(
        MergeRecipe(
            "add-difference",
            InputRef(str(a)),
            InputRef(str(b)),
            InputRef(str(c)),
            alpha=0.4,
            dtype="fp32",
        ),
        tmp_path / "ad.safetensors",
    ).path
    result = trace_lineage(model, [a, b, c])
    for fit in result.blocks.values():
        got = [fit.coefficients[str(p)] for p in (a, b, c)]
        assert got == pytest.approx([1.0, 0.4, -0.4], abs=1e-4)
    assert "IN00–OUT11: 1.00·nai + 0.40·wd13 - 0.40·sd15" in result.summary()[0]


def test_nonnegative_picks_the_candidates_that_take_part(parents, tmp_path):
    a, b, c = parents
    model = merge(
        MergeRecipe("weighted-sum", InputRef(str(a)), InputRef(str(c)), alpha=0.6),
        tmp_path / "ws.safetensors",
    ).path
    result = trace_lineage(model, [a, b, c], nonnegative=True)
    for fit in result.blocks.values():
        assert fit.coefficients[str(b)] == 0.0  # exactly: not part of the merge
        assert fit.coefficients[str(a)] == pytest.approx(0.4, abs=2e-3)
    data = result.to_dict()
    assert data["blocks"]["M00"]["coefficients"][str(c)] == pytest.approx(0.6, abs=2e-3)
    assert data["method"] == "nonnegative least squares"


def test_identical_model_and_missing_keys(make_model, parents):
    a, b, _ = parents
    from merge_fixtures import random_state

    state = random_state(2)
    key = "model.diffusion_model.output_blocks.4.1.proj_in.weight"
    del state[key]
    partial = make_model("partial.safetensors", 2, state=state)
    result = trace_lineage(b, [a, partial])
    assert result.skipped == [key]
    assert result.identical["TE"] == [str(partial)] and result.identical["VAE"] == [str(partial)]
    assert "UNet" not in result.identical  # a key missing from the candidate: not the same UNet
    assert result.blocks["OUT04"].coefficients[str(partial)] == pytest.approx(1.0)


def test_solver_handles_rank_deficient_and_constrained_cases():
    x = torch.randn(1000, 3, dtype=torch.float64)
    x[:, 2] = x[:, 1]  # two identical candidates
    m = 0.3 * x[:, 0] + 0.7 * x[:, 1]
    full = torch.cat([m[:, None], x], dim=1)
    coefficients, residual = solve_least_squares(full.T @ full)
    assert float(coefficients[0]) == pytest.approx(0.3) and float(
        coefficients[1] + coefficients[2]
    ) == pytest.approx(0.7)
    assert residual < 1e-6
    m2 = x[:, 0] - 0.5 * x[:, 1]
    full2 = torch.cat([m2[:, None], x[:, :2]], dim=1)
    nn, res = solve_least_squares(full2.T @ full2, nonnegative=True)
    assert float(nn[1]) == 0.0 and float(nn[0]) > 0 and res > 0.1

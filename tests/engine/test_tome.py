"""Token merging (`--token-merging R`, A1111's `token_merging_ratio`; `emaki.engine.speed.token_merging`):
the bipartite matching on its own, then on the bundled demo model — off at 0, fewer tokens in the
full-resolution self-attention, a close picture, reproducible, recorded in infotext and read
back, undone after the run — and through the CLI, the A1111 API and the X/Y/Z axes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from engine_runner import engine_for, generate, runner_workspace

from emaki.engine.run import GenerationProgress
from emaki.engine.speed import TokenMerging, speed_extensions
from emaki.engine.speed.token_merging import (
    grid_of,
    match_tokens,
    self_attention_blocks,
    split_cells,
)
from emaki.errors import Interrupted, ParamsError
from emaki.infotext import parse_infotext, read_infotext
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams

PROMPT = "1girl, solo, pink hair, twintails, green eyes, smile, blue background"


def params(**fields: object) -> GenerationParams:
    values: dict[str, object] = {"prompt": PROMPT, "negative_prompt": "lowres", "seed": 11, "steps": 4,
                                 "sampler_name": "Euler"}
    return GenerationParams.create(**(values | fields))


def pixels(p: GenerationParams) -> np.ndarray:
    return np.asarray(generate(p, save=False).images[0].image).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def unet() -> torch.nn.Module:
    return engine_for(runner_workspace()).load(None).components.unet


def assert_unpatched(model: torch.nn.Module) -> None:
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert not [name for name, m in model.named_modules() if m._forward_pre_hooks]


# --- the matching ---

def test_split_cells_puts_one_dst_in_each_whole_cell():
    src, dst = split_cells(5, 4, torch.Generator().manual_seed(0))  # the 5th row is no whole cell
    assert sorted([*src.tolist(), *dst.tolist()]) == list(range(20)) and dst.numel() == 4
    cells = sorted(((int(i) // 4) // 2, (int(i) % 4) // 2) for i in dst)
    assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]
    again, _ = split_cells(5, 4, torch.Generator().manual_seed(0)), None
    assert torch.equal(again[1], dst)  # the same generator state, the same choice
    assert split_cells(4, 4, None)[1].tolist() == [0, 2, 8, 10]  # no generator: each cell's top-left


def test_merging_averages_the_most_similar_tokens_and_unmerging_puts_them_back():
    # A 4x4 grid whose 2x2 cells are each one repeated token: merging every src token loses nothing.
    cells = torch.randn(2, 2, 2, 8)
    x = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(2, 16, 8)
    found = match_tokens(x, 4, 4, 0.75, torch.Generator().manual_seed(3))
    assert found is not None
    merged = found.merge(x)
    assert merged.shape == (2, 4, 8)
    assert torch.allclose(found.unmerge(merged), x, atol=1e-6)
    # Random tokens, half merged: unmerged tokens come back as they were, merged ones as their dst's mean.
    x = torch.randn(1, 16, 8)
    found = match_tokens(x, 4, 4, 0.5, None)
    assert found is not None and found.merge(x).shape == (1, 8, 8)
    back = found.unmerge(found.merge(x))
    untouched = found.src[found.kept[0]]
    assert torch.equal(back[0, untouched], x[0, untouched])
    for dst_slot, dst_token in enumerate(found.dst.tolist()):
        group = [dst_token, *found.src[found.merged[0][found.into[0] == dst_slot]].tolist()]
        assert torch.allclose(back[0, group], x[0, group].mean(dim=0).expand(len(group), -1), atol=1e-6)
    assert match_tokens(x, 4, 4, 0.01, None) is None  # fewer than one token: nothing to do


def test_only_full_resolution_grids_are_merged_by_default():
    assert grid_of(64 * 64, (64, 64), 1) == (64, 64)
    assert grid_of(32 * 32, (64, 64), 1) is None
    assert grid_of(32 * 32, (64, 64), 2) == (32, 32)
    assert grid_of(5 * 4, (9, 7), 2) == (5, 4)  # odd sizes round up, as the UNet's convolutions do


# --- on the demo model ---

@pytest.fixture(scope="module")
def exact() -> np.ndarray:
    return pixels(params())


@contextmanager
def attention_tokens(model: torch.nn.Module) -> Iterator[dict[str, list[int]]]:
    """The token count each self-attention's `to_q` saw, by block."""
    seen: dict[str, list[int]] = {}
    with ExitStack() as stack:
        for name, block in self_attention_blocks(model).items():
            tokens = seen.setdefault(name, [])
            hook = block.attn1.to_q.register_forward_pre_hook(lambda m, args, t=tokens: t.append(args[0].shape[1]))
            stack.callback(hook.remove)
        yield seen


def test_ratio_zero_is_off_and_changes_nothing(exact):
    assert GenerationParams().token_merging_ratio == 0.0
    assert not [e for e in speed_extensions(params()) if isinstance(e, TokenMerging)]
    assert np.array_equal(pixels(params(token_merging_ratio=0.0)), exact)
    assert "Token merging ratio" not in parse_infotext(generate(params(), save=False).images[0].infotext)
    with pytest.raises(ParamsError, match="token_merging_ratio"):
        GenerationParams.create(token_merging_ratio=0.95)  # A1111's slider stops at 0.9


def test_merging_halves_full_resolution_self_attention_and_stays_close(exact):
    model = unet()
    with attention_tokens(model) as seen:
        result = generate(params(token_merging_ratio=0.5), save=False)
    full = {name: counts for name, counts in seen.items() if name.startswith(("down_blocks.0.", "up_blocks.2."))}
    assert len(full) == 3 and all(set(counts) == {16 * 16 // 2} for counts in full.values())  # of 256 tokens
    assert all(set(counts) == {8 * 8} for name, counts in seen.items() if name.startswith("down_blocks.1."))
    image = np.asarray(result.images[0].image).astype(np.float64)
    assert 0 < np.abs(image - exact).max() and psnr(image, exact) > 24  # measured 28.2 dB (seed 11, 4 steps)
    assert parse_infotext(result.images[0].infotext)["Token merging ratio"] == "0.5"
    other = params(seed=3)
    assert psnr(pixels(other.updated(token_merging_ratio=0.5)), pixels(other)) > 24  # measured 30.2 dB


def test_same_seed_same_image_and_the_dst_choice_follows_the_seed():
    first, second = pixels(params(token_merging_ratio=0.5)), pixels(params(token_merging_ratio=0.5))
    assert np.array_equal(first, second)
    merging = TokenMerging(0.5)
    merging.seed, merging.passes, merging.calls = 11, 1, 1
    merging._unet_starts(torch.nn.Identity(), (torch.zeros(2, 4, 16, 16),), {})
    one = split_cells(16, 16, merging.generator)[1]
    merging._unet_starts(torch.nn.Identity(), (torch.zeros(1, 4, 16, 16),), {})  # a 2nd UNet call, same step
    assert torch.equal(split_cells(16, 16, merging.generator)[1], one)  # prompt and negative rows alike
    merging.calls = 2
    merging._unet_starts(torch.nn.Identity(), (torch.zeros(2, 4, 16, 16),), {})
    assert not torch.equal(split_cells(16, 16, merging.generator)[1], one)  # a new choice each step


def test_the_unet_is_unpatched_after_a_run_and_after_an_interrupt(exact):
    generate(params(token_merging_ratio=0.5), save=False)
    assert_unpatched(unet())
    interrupt = threading.Event()

    def stop_at_step_two(event: GenerationProgress) -> None:
        if event.step == 2:
            interrupt.set()

    with pytest.raises(Interrupted):
        generate(params(token_merging_ratio=0.5), save=False, interrupt=interrupt, progress=stop_at_step_two)
    assert_unpatched(unet())
    assert np.array_equal(pixels(params()), exact)


def test_the_ratio_round_trips_through_infotext():
    made = generate(params(token_merging_ratio=0.3), save=False).images[0]
    back = decode_infotext(made.infotext)
    assert back.token_merging_ratio == 0.3
    again = generate(back.updated(model=None), save=False).images[0]
    assert np.array_equal(np.asarray(again.image), np.asarray(made.image))
    a1111 = "1girl\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Token merging ratio: 0.6, RNG: CPU"
    assert decode_infotext(a1111).token_merging_ratio == 0.6


# --- the surfaces ---

def test_cli_flag_and_from_png(tmp_path, capsys):
    def run(*args: str) -> str:
        code, printed, err = run_cli(capsys, *args)
        assert code == 0, err
        return printed.strip()

    out = str(tmp_path)
    printed = run("generate", PROMPT, "--steps", "2", "--seed", "5", "--token-merging", "0.5", "--out", out,
                  "--precision", "fp32")
    assert parse_infotext(read_infotext(printed) or "")["Token merging ratio"] == "0.5"
    off = run("generate", "--from", printed, "--token-merging", "0", "--out", out, "--precision", "fp32")
    assert "Token merging ratio" not in parse_infotext(read_infotext(off) or "")  # read back, then overridden


def test_a1111_route_field_and_override_settings():
    from fastapi.testclient import TestClient

    from emaki.server import ServerSettings, create_app

    fast = {"prompt": "1girl", "seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
    with TestClient(create_app(ServerSettings())) as client:
        def infotext(**body: object) -> str:
            response = client.post("/sdapi/v1/txt2img", json=fast | body)
            assert response.status_code == 200, response.text
            return str(json.loads(response.json()["info"])["infotexts"][0])

        assert "Token merging ratio: 0.5" in infotext(token_merging_ratio=0.5)
        assert "Token merging ratio: 0.4" in infotext(override_settings={"token_merging_ratio": 0.4})
        assert "Token merging ratio" not in infotext()  # the override did not stay
        bad = client.post("/sdapi/v1/txt2img", json=fast | {"override_settings": {"token_merging_ratio": 2}})
        assert bad.status_code == 422 and "token_merging_ratio" in bad.text


@pytest.mark.parametrize(("label", "field"), [("Token merging ratio", "token_merging_ratio"),
                                             ("Token merging ratio high-res", "token_merging_ratio_hr")])
def test_token_merging_ratios_are_xyz_axes(label, field):
    from emaki.xyz.axes import find_axis

    axis = find_axis(label)
    fields: dict[str, object] = {}
    assert axis.apply is not None
    axis.apply(fields, 0.5, [0.0, 0.5])
    assert fields == {field: 0.5}

"""VAE tiling: tiled decode/encode against the whole pass on the tiny model, seams, the policy's
choice, and a generation through the engine and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from engine_runner import generate

from emaki.devices import DevicePolicy
from emaki.engine.vae import decode_latents, encode_to_latents
from emaki.engine.vae_tiling import decode_tiled, encode_tiled, tile_spans
from emaki.errors import ParamsError
from emaki.params import GenerationParams

TILE, OVERLAP, MARGIN = 24, 8, 8  # latent pixels: 48² latents make 3×3 tiles


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(1, 4, 48, 48, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def whole(tiny_components, latents) -> torch.Tensor:
    with torch.inference_mode():
        return tiny_components.vae.decode(latents).sample


@contextmanager
def picture_statistics(vae, run_whole) -> Iterator[None]:
    """Every GroupNorm of `vae` normalises with the statistics it saw in `run_whole()` (the whole
    picture's), whatever part of the picture it is given."""
    norms = [m for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)]
    seen: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(norm, args):
        groups = args[0].reshape(args[0].shape[0], norm.num_groups, -1)
        seen[norm] = (groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True))

    def fixed(norm, args, out):
        x = args[0]
        mean, var = seen[norm]
        y = ((x.reshape(x.shape[0], norm.num_groups, -1) - mean) / torch.sqrt(var + norm.eps)).reshape(x.shape)
        shape = (-1,) + (1,) * (x.ndim - 2)
        return y * norm.weight.reshape(shape) + norm.bias.reshape(shape)

    hooks = [n.register_forward_pre_hook(record) for n in norms]
    with torch.inference_mode():
        run_whole()
    for hook in hooks:
        hook.remove()
    hooks = [n.register_forward_hook(fixed) for n in norms]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def test_tiles_cover_the_side_with_the_overlap_asked_for():
    for length in range(1, 300):
        spans = tile_spans(length, TILE, OVERLAP)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert len({end - start for start, end in spans}) == 1 and spans[0][1] - spans[0][0] <= max(TILE, 1)
        assert all(a[1] - b[0] >= OVERLAP for a, b in pairwise(spans))


def test_with_the_pictures_statistics_tiles_decode_exactly(tiny_components, latents, whole):
    """The margins and the blending add no error of their own: given the whole picture's GroupNorm
    statistics, the tiled decode is the whole decode (float32 rounding only)."""
    vae = tiny_components.vae
    with picture_statistics(vae, lambda: vae.decode(latents)), torch.inference_mode():
        tiled = decode_tiled(vae, latents, TILE, OVERLAP, MARGIN)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-4


def test_tiled_decode_is_close_to_the_whole_decode(tiny_components, latents, whole):
    """Each tile normalises with its own statistics: measured 0.014 mean, 0.12 max (pixels in
    [-1, 1], a 2.4-wide range here); bounded at 0.02 and 0.2."""
    with torch.inference_mode():
        tiled = decode_tiled(tiny_components.vae, latents, TILE, OVERLAP, MARGIN)
    error = (tiled - whole).abs()
    assert error.mean() < 0.02 and error.max() < 0.2


def _border_jumps(tiled: torch.Tensor, whole: torch.Tensor, edges: list[int]) -> tuple[float, float]:
    """How much the tiled picture's error (against the whole one) jumps from one column to the
    next, on average down each column: the largest across a tile border, the largest elsewhere."""
    error = tiled - whole
    jumps = (error[..., 1:] - error[..., :-1]).abs().mean(dim=(0, 1, 2))  # between columns i and i + 1
    border = torch.zeros_like(jumps, dtype=torch.bool)
    border[[edge - 1 for edge in edges]] = True
    return float(jumps[border].max()), float(jumps[~border].max())


@pytest.mark.parametrize(("overlap", "margin"), [(OVERLAP, MARGIN), (0, 0)])
def test_no_seam_along_the_tile_borders(tiny_components, latents, whole, overlap, margin):
    """A seam is a jump in the error all along a tile border. With the blending, the jump across
    every border (where a tile starts or ends, in rows and in columns) is no larger than between
    any two columns or rows inside the tiles; tiles laid edge to edge without margins show
    theirs (measured 0.32 and 0.34 against at most 0.28 elsewhere)."""
    with torch.inference_mode():
        tiled = decode_tiled(tiny_components.vae, latents, TILE, overlap, margin)
    factor = whole.shape[-1] // latents.shape[-1]
    edges = sorted({edge * factor for span in tile_spans(latents.shape[-1], TILE, overlap) for edge in span}
                   - {0, whole.shape[-1]})
    for picture, reference in ((tiled, whole), (tiled.transpose(-1, -2), whole.transpose(-1, -2))):
        across, inside = _border_jumps(picture, reference, edges)
        assert (across <= inside) == (overlap > 0)


def test_tiled_encode_is_close_to_the_whole_encode(tiny_components):
    vae = tiny_components.vae
    pixels = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        whole = vae.encode(pixels).latent_dist.mean
        with picture_statistics(vae, lambda: vae.encode(pixels)):
            exact = encode_tiled(vae, pixels, TILE, OVERLAP, MARGIN).chunk(2, dim=1)[0]
        tiled = encode_tiled(vae, pixels, TILE, OVERLAP, MARGIN).chunk(2, dim=1)[0]
    assert (exact - whole).abs().max() < 1e-4
    # measured 0.007 mean, 0.047 max, latents of spread (std) 0.27
    assert (tiled - whole).abs().mean() < 0.015 and (tiled - whole).abs().max() < 0.1


def test_policy_tiles_only_when_a_whole_pass_would_not_fit():
    """auto: a whole pass when it needs at most half the free memory (1024² in bf16: ~2.6 GB)."""
    bf16, fp32 = DevicePolicy.choose("bf16", "cpu", threads=1), DevicePolicy.choose("fp32", "cpu", threads=1)
    plenty, little = 16 * 1024**3, 4 * 1024**3
    assert not bf16.tiles_vae(1024 * 1024, plenty) and bf16.tiles_vae(2048 * 2048, plenty)
    assert bf16.tiles_vae(1024 * 1024, little) and not bf16.tiles_vae(512 * 512, little)
    assert fp32.tiles_vae(1024 * 1024, little) and not fp32.tiles_vae(640 * 640, little)
    on, off = (DevicePolicy.choose("fp32", "cpu", threads=1, vae_tiling=m) for m in ("on", "off"))
    assert on.tiles_vae(8 * 8, plenty) and not off.tiles_vae(4096 * 4096, 1)
    with pytest.raises(ParamsError, match="vae_tiling: expected auto, on or off, got 'sideways'"):
        DevicePolicy.choose("fp32", "cpu", vae_tiling="sideways")


@pytest.fixture
def tiled_calls(monkeypatch) -> list[str]:
    """The tiled passes `emaki.engine.vae` makes, by name (they still run)."""
    import emaki.engine.vae as vae_passes

    calls: list[str] = []

    def spy(name: str, real: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def recorded(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return recorded

    for name in ("decode_tiled", "encode_tiled"):
        monkeypatch.setattr(vae_passes, name, spy(name, getattr(vae_passes, name)))
    return calls


def test_decode_and_encode_follow_the_policy(tiny_components, latents, tiled_calls):
    vae = tiny_components.vae
    on, off = (DevicePolicy.choose("fp32", "cpu", threads=1, vae_tiling=m) for m in ("on", "off"))
    small = latents[:, :, :16, :16] * 0.18215  # within one tile of the default size: the whole pass
    assert torch.equal(decode_latents(vae, small, on), decode_latents(vae, small, off))
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert torch.equal(encode_to_latents(vae, pixels, on), encode_to_latents(vae, pixels, off))
    assert tiled_calls == ["decode_tiled", "encode_tiled"]


def _picture(model, vae_tiling: str, **fields) -> np.ndarray:
    params = GenerationParams.create(prompt="1girl", model=str(model), seed=3, steps=1, width=32, height=32,
                                     **fields)
    policy = DevicePolicy.choose("fp32", "cpu", threads=1, vae_tiling=vae_tiling)
    return np.asarray(generate(params, save=False, policy=policy).images[0].image)


def test_generation_decodes_in_tiles_when_asked(tiny_safetensors, tiled_calls):
    assert np.array_equal(_picture(tiny_safetensors, "on"), _picture(tiny_safetensors, "off"))  # one tile
    assert tiled_calls == ["decode_tiled"]


def test_seamless_tiling_pictures_decode_whole(tiny_safetensors, tiled_calls):
    """Circular padding would wrap a tile onto itself, not onto the picture: such runs are not tiled."""
    _picture(tiny_safetensors, "on", tiling=True)
    assert tiled_calls == []


def test_cli_refuses_an_unknown_vae_tiling(capsys):
    code, _, err = run_cli(capsys, "generate", "a cat", "--vae-tiling", "sideways")
    assert code == 2 and "vae_tiling: expected auto, on or off, got 'sideways'" in err

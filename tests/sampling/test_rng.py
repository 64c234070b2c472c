"""Seeds as A1111 v1.10.1 draws them (`modules/rng.py`), and the "NV" source against CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emaki.errors import ParamsError
from emaki.sampling import ImageRNG, PhiloxGenerator, slerp

SHAPE = (4, 8, 12)

# torch.manual_seed(0); torch.randn((3, 4), device="cuda") — the "Expected output" published in
# A1111's modules/rng_philox.py docstring (AUTOMATIC1111/stable-diffusion-webui, v1.6+), which
# A1111 gives as the CUDA values its CPU Philox generator imitates.
CUDA_SEED0_3x4 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
# torch.manual_seed(0); torch.randn((8, 8), device="cuda", dtype=torch.float32), printed by
# PyTorch with device='cuda:0' in a public CUDA MODE lecture write-up (fused add-mul-relu Triton
# example, `get_inputs(add_manual_seed=True)`); 4 decimals as printed.
CUDA_SEED0_8x8 = [
    [-0.9247, -0.4253, -2.6438, 0.1452, -0.1209, -0.5797, -0.6229, -0.3284],
    [-1.0745, -0.3631, -1.6711, 2.2655, 0.3117, -0.1842, 1.2866, 1.1820],
    [-0.1271, 1.2169, 1.4353, 1.0605, -0.4941, -1.4244, -0.7244, -1.2973],
    [0.0697, -0.0074, 1.8969, 0.6878, -0.0779, -0.8373, 1.3506, -0.2879],
    [-0.5965, -0.3283, -0.9086, -0.8059, -0.7407, -0.0504, 0.5435, 1.5150],
    [0.0141, 0.4532, 1.6349, 0.7124, -0.1806, 1.0252, -1.4622, -0.7554],
    [-0.1836, 0.3824, 0.3918, -0.0830, 0.8971, -1.1123, 0.1116, 0.4863],
    [-0.5499, -0.3231, -0.5469, 0.9049, 0.2837, 0.1210, 0.4730, -1.0823],
]


def cpu_randn(seed: int, shape: tuple[int, ...], draws: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(draws)]


def test_nv_matches_published_cuda_values() -> None:
    """Equal to CUDA within a few float32 ulps: the GPU's fast sin/log intrinsics round
    differently from any CPU libm, so bit equality is not possible (A1111's NV has the same gap)."""
    got = PhiloxGenerator(0).randn((3, 4))
    np.testing.assert_allclose(got, np.array(CUDA_SEED0_3x4, dtype=np.float32), rtol=0, atol=5e-7)
    got = PhiloxGenerator(0).randn((8, 8))
    np.testing.assert_allclose(got, np.array(CUDA_SEED0_8x8), rtol=0, atol=5.001e-5)


def test_nv_imagerng_first_draw_is_cuda_randn_of_the_latent() -> None:
    rng = ImageRNG((1, 8, 8), [0], source="NV")
    got = rng.first()[0, 0]
    np.testing.assert_allclose(got.numpy(), np.array(CUDA_SEED0_8x8), atol=5.001e-5)


def test_philox_streams_advance_and_depend_on_seed() -> None:
    g = PhiloxGenerator(123)
    a, b = g.randn((4, 4)), g.randn((4, 4))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, PhiloxGenerator(123).randn((4, 4)))
    assert not np.array_equal(a, PhiloxGenerator(124).randn((4, 4)))
    big = PhiloxGenerator(2**32 + 5).randn((8,))
    assert not np.array_equal(big, PhiloxGenerator(5).randn((8,)))
    sample = PhiloxGenerator(7).randn((64, 64))
    assert abs(float(sample.mean())) < 0.05 and abs(float(sample.std()) - 1) < 0.05


def test_cpu_per_image_generators() -> None:
    rng = ImageRNG(SHAPE, [10, 11])
    first, second = rng.first(), rng.next()
    for i, seed in enumerate([10, 11]):
        a, b = cpu_randn(seed, SHAPE, 2)
        assert torch.equal(first[i], a) and torch.equal(second[i], b)
    # an image does not depend on its batch
    alone = ImageRNG(SHAPE, [11])
    assert torch.equal(alone.first()[0], first[1])


def test_next_before_first_is_first() -> None:
    a = ImageRNG(SHAPE, [3]).next()
    assert torch.equal(a, ImageRNG(SHAPE, [3]).first())


def test_ensd_reseeds_after_first() -> None:
    rng = ImageRNG(SHAPE, [100, 200], eta_noise_seed_delta=31337)
    first, nxt = rng.first(), rng.next()
    assert torch.equal(first[0], cpu_randn(100, SHAPE)[0])
    assert torch.equal(nxt[0], cpu_randn(100 + 31337, SHAPE)[0])
    assert torch.equal(nxt[1], cpu_randn(200 + 31337, SHAPE)[0])


def test_variation_seed_slerp() -> None:
    base, sub = cpu_randn(5, SHAPE)[0], cpu_randn(9, SHAPE)[0]
    assert torch.equal(ImageRNG(SHAPE, [5], subseeds=[9], subseed_strength=0.0).first()[0], base)
    full = ImageRNG(SHAPE, [5], subseeds=[9], subseed_strength=1.0).first()[0]
    assert torch.allclose(full, sub, atol=1e-5)
    mid = ImageRNG(SHAPE, [5], subseeds=[9], subseed_strength=0.25).first()[0]
    # independent per-(channel, column) slerp: angle between the H-vectors
    lo = base / base.norm(dim=1, keepdim=True)
    hi = sub / sub.norm(dim=1, keepdim=True)
    omega = torch.acos((lo * hi).sum(1, keepdim=True))
    want = (torch.sin(0.75 * omega) * base + torch.sin(0.25 * omega) * sub) / torch.sin(omega)
    assert torch.allclose(mid, want, atol=1e-5)
    # missing subseeds fall back to subseed 0, as A1111
    two = ImageRNG(SHAPE, [5, 6], subseeds=[9], subseed_strength=0.5).first()
    assert torch.allclose(two[1], slerp(0.5, cpu_randn(6, SHAPE)[0], cpu_randn(0, SHAPE)[0]))


def test_slerp_near_parallel_uses_a1111_weights() -> None:
    x = torch.randn(SHAPE)
    assert torch.allclose(slerp(0.3, x, x * 1.0000001), x * 0.3 + x * 0.7)


@pytest.mark.parametrize(("from_h", "from_w"), [(48, 64), (96, 128), (32, 128)])
def test_seed_resize_pastes_centred(from_h: int, from_w: int) -> None:
    rng = ImageRNG(SHAPE, [42], seed_resize_from_h=from_h, seed_resize_from_w=from_w)
    got = rng.first()[0]
    small = cpu_randn(42, (4, from_h // 8, from_w // 8))[0]
    canvas = cpu_randn(42, SHAPE)[0]
    h, w = SHAPE[1], SHAPE[2]
    sh, sw = small.shape[1], small.shape[2]
    for y in range(h):
        for x in range(w):
            sy, sx = y - (h - sh) // 2, x - (w - sw) // 2
            inside = 0 <= sy < sh and 0 <= sx < sw
            want = small[:, sy, sx] if inside else canvas[:, y, x]
            assert torch.equal(got[:, y, x], want), (y, x)
    # the image's own stream was used once for the canvas, then continues
    assert torch.equal(rng.next()[0], cpu_randn(42, SHAPE, 2)[1])


def test_gpu_source_without_cuda_is_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert torch.equal(ImageRNG(SHAPE, [8], source="GPU").first(), ImageRNG(SHAPE, [8]).first())


def test_unknown_source() -> None:
    with pytest.raises(ParamsError, match="NV"):
        ImageRNG(SHAPE, [1], source="TPU")


def test_same_seed_same_noise_every_time() -> None:
    for source in ("CPU", "NV"):
        a = ImageRNG(SHAPE, [77], source=source)
        b = ImageRNG(SHAPE, [77], source=source)
        assert torch.equal(a.first(), b.first()) and torch.equal(a.next(), b.next())


def test_noise_sampler_reads_next() -> None:
    rng = ImageRNG(SHAPE, [1, 2])
    rng.first()
    ns = rng.noise_sampler()
    assert torch.equal(ns(torch.tensor(1.0), torch.tensor(0.5))[0], cpu_randn(1, SHAPE, 2)[1])

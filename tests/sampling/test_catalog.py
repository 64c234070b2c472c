"""Every A1111 v1.10.1 sampler by name: metadata, end to end with seeded noise, interrupt."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from sampling_helpers import ToyDenoiser

from emaki.errors import Interrupted, SamplerError
from emaki.sampling import (
    SAMPLERS,
    ImageRNG,
    StepInfo,
    brownian_noise_sampler,
    get_sampler,
    model_sigmas,
    parse_sampler_name,
    sd1_alphas_cumprod,
    sigmas_for,
)

MS = model_sigmas(sd1_alphas_cumprod())
# A1111 v1.10.1 sd_samplers_kdiffusion.py, sd_samplers_timesteps.py, sd_samplers_lcm.py
# (DDIM CFG++ is not implemented: it needs the unconditional prediction from the denoiser).
A1111_NAMES = [
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
]


def test_names_and_order() -> None:
    assert [s.name for s in SAMPLERS] == A1111_NAMES


def test_second_order_as_specs_4_3() -> None:
    second = {s.name for s in SAMPLERS if s.second_order}
    assert second == {"Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "Restart"}


def test_uses_ensd_as_specs_9() -> None:
    assert {s.name for s in SAMPLERS if s.uses_ensd} == {
        "Euler a",
        "DPM2 a",
        "DPM++ 2S a",
        "DPM fast",
        "DPM adaptive",
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("LMS Karras", ("LMS", "Karras")),
        ("DPM2 Karras", ("DPM2", "Karras")),
        ("DPM2 a Karras", ("DPM2 a", "Karras")),
        ("DPM++ 2S a Karras", ("DPM++ 2S a", "Karras")),
        ("DPM++ SDE Karras", ("DPM++ SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "Karras")),
        ("k_lms_ka", ("LMS", "Karras")),
        ("k_dpm_2_a_ka", ("DPM2 a", "Karras")),
        ("k_dpmpp_2s_ancestral", ("DPM++ 2S a", "Automatic")),
        ("k_dpm_2_ancestral", ("DPM2 a", "Automatic")),
        ("k_dpm_adaptive", ("DPM adaptive", "Automatic")),
        ("ddim", ("DDIM", "Automatic")),
        ("plms", ("PLMS", "Automatic")),
        ("DDIM Uniform", ("DDIM", "Uniform")),
        ("Euler a Align Your Steps", ("Euler a", "Align Your Steps")),
    ],
)
def test_old_and_novelai_names(old: str, new: tuple[str, str]) -> None:
    assert parse_sampler_name(old) == new


def test_api_metadata() -> None:
    heun = get_sampler("DPM++ 2M SDE Heun")
    assert heun.options == {
        "scheduler": "exponential",
        "brownian_noise": True,
        "solver_type": "heun",
    }
    assert get_sampler("Euler").options == {}
    assert "s_churn" in get_sampler("Euler").option_names
    x, sigmas = torch.zeros(1, 4, 2, 2), MS[:2].flip(0)
    with pytest.raises(SamplerError, match="s_churn"):
        get_sampler("Euler")(ToyDenoiser(), x, sigmas, order=2)
    # A1111's global settings go only to samplers that take them
    get_sampler("Euler")(ToyDenoiser(), x, sigmas, eta=0.5, s_noise=1.0)
    get_sampler("DPM++ 2M")(ToyDenoiser(), x, sigmas, eta=0.5, s_churn=1.0)


def test_global_settings_forwarded_as_a1111() -> None:
    """A1111 gives s_noise to Euler but not to Euler a (`sampler_extra_params`)."""
    sigmas = sigmas_for(get_sampler("Euler a"), "Automatic", 4, MS)
    x = torch.randn(1, 4, 3, 3) * sigmas[0]

    def run(name: str, **options: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)

        def ns(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=g)

        return get_sampler(name)(ToyDenoiser(), x, sigmas, noise_sampler=ns, **options)

    assert torch.equal(run("Euler a", s_noise=0.5), run("Euler a"))
    assert not torch.equal(run("DPM2 a", s_noise=0.5), run("DPM2 a"))
    assert not torch.equal(run("Euler a", eta=0.5), run("Euler a"))


def _run(name: str, seed: int = 1, steps: int = 6, callback: Any = None) -> torch.Tensor:
    sampler = get_sampler(name)
    sigmas = sigmas_for(sampler, "Automatic", steps, MS)
    rng = ImageRNG(
        (4, 6, 6), [seed, seed + 1], eta_noise_seed_delta=31337 if sampler.uses_ensd else 0
    )
    x = sampler.initial_latent(rng.next(), sigmas[0])
    return sampler(ToyDenoiser(), x, sigmas, noise_sampler=rng.noise_sampler(), callback=callback)


@pytest.mark.parametrize("name", A1111_NAMES)
def test_every_sampler_runs_and_is_reproducible(name: str) -> None:
    seen: list[StepInfo] = []
    a = _run(name, callback=seen.append)
    assert a.shape == (2, 4, 6, 6) and torch.isfinite(a).all()
    assert seen and all(isinstance(s, StepInfo) for s in seen)
    assert [s.step for s in seen] == list(range(len(seen)))
    assert torch.equal(a, _run(name))
    sampler = get_sampler(name)
    if sampler.uses_ensd or sampler.brownian_noise or name in ("Restart", "LCM"):  # they draw noise
        assert not torch.equal(a, _run(name, seed=5))


@pytest.mark.parametrize("name", A1111_NAMES)
def test_every_sampler_stops_on_interrupt(name: str) -> None:
    def stop(info: StepInfo) -> None:
        raise Interrupted("stop")

    with pytest.raises(Interrupted):
        _run(name, callback=stop)


@pytest.mark.filterwarnings("ignore:Should have:UserWarning")  # torchsde's float32 end checks
def test_brownian_noise_equals_k_diffusion(kdiff: Any) -> None:
    x = torch.randn(2, 4, 6, 6)
    sigmas = sigmas_for(get_sampler("DPM++ SDE"), "Automatic", 6, MS)
    ours = brownian_noise_sampler(x, sigmas, [11, 12])
    ref = kdiff.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[11, 12])
    for a, b in itertools.pairwise(sigmas[:-1]):
        assert torch.equal(ours(a, b), ref(a, b))
    # an image's noise depends on its own seed only
    alone = brownian_noise_sampler(x[1:], sigmas, [12])
    assert torch.equal(alone(sigmas[0], sigmas[1])[0], ours(sigmas[0], sigmas[1])[1])

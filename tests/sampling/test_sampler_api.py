"""The sampler API the engine relies on: names, callbacks, interrupt, explicit noise, guidance."""

from __future__ import annotations

import pytest
import torch
from sampling_helpers import NoiseStream, ToyDenoiser

from emaki.errors import Interrupted, SamplerError
from emaki.sampling import (
    SAMPLERS,
    SCHEDULES,
    StepInfo,
    get_sampler,
    parse_sampler_name,
    sigmas_for,
)
from emaki.sampling.denoiser import stack_conds


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("DPM++ 2M Karras",), ("DPM++ 2M", "Karras")),
        (("DPM++ 2M",), ("DPM++ 2M", "Automatic")),
        (("Euler a", "automatic"), ("Euler a", "Automatic")),
        (("euler A", "karras"), ("Euler a", "Karras")),
        (("k_euler_ancestral",), ("Euler a", "Automatic")),
        (("k_euler_a",), ("Euler a", "Automatic")),
        (("k_dpmpp_2m_ka",), ("DPM++ 2M", "Karras")),
        (("Euler SGMUniform",), ("Euler", "SGM Uniform")),
        (("DPM++ 2M Karras", "Exponential"), ("DPM++ 2M", "Karras")),
    ],
)
def test_parse_sampler_name(given: tuple[str, ...], expected: tuple[str, str]) -> None:
    assert parse_sampler_name(*given) == expected


def test_unknown_names_list_choices() -> None:
    with pytest.raises(SamplerError, match="Euler a"):
        parse_sampler_name("Eulerr")
    with pytest.raises(SamplerError, match="Karras"):
        parse_sampler_name("Euler", "Karas")
    with pytest.raises(SamplerError):
        get_sampler("nope")


def test_metadata() -> None:
    names = [s.name for s in SAMPLERS]
    assert len(names) == len(set(names))
    assert get_sampler("Heun").second_order and not get_sampler("Euler").second_order
    assert get_sampler("Euler a").uses_ensd
    assert get_sampler("DPM++ 2M").default_schedule == "Karras"
    assert SCHEDULES[0].label == "Automatic"


def test_automatic_schedules(sd_sigmas: torch.Tensor) -> None:
    euler = sigmas_for(get_sampler("Euler"), "Automatic", 20, sd_sigmas)
    assert len(euler) == 21 and euler[-1] == 0
    assert torch.isclose(euler[0], sd_sigmas[-1]) and torch.isclose(euler[-2], sd_sigmas[0])
    karras = sigmas_for(get_sampler("DPM++ 2M"), "Automatic", 20, sd_sigmas)
    assert torch.equal(karras, sigmas_for(get_sampler("DPM++ 2M"), "Karras", 20, sd_sigmas))
    assert not torch.equal(karras[:-1], euler[:-1])


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DPM++ 2M", "Heun"])
def test_callback_every_step_and_interrupt(name: str, sd_sigmas: torch.Tensor) -> None:
    sigmas = sigmas_for(get_sampler(name), "Karras", 6, sd_sigmas)
    x = torch.randn(1, 4, 4, 4) * sigmas[0]
    seen: list[StepInfo] = []
    get_sampler(name)(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x), callback=seen.append)
    assert [s.step for s in seen] == list(range(6))
    assert all(s.total == 6 for s in seen)
    assert seen[0].sigma == pytest.approx(float(sigmas[0]))

    def stop(info: StepInfo) -> None:
        if info.step == 2:
            raise Interrupted("stop")

    toy = ToyDenoiser()
    with pytest.raises(Interrupted):
        get_sampler(name)(toy, x, sigmas, noise_sampler=NoiseStream(x), callback=stop)
    assert toy.calls <= 3 * (2 if get_sampler(name).second_order else 1)


def test_noise_is_never_implicit(sd_sigmas: torch.Tensor) -> None:
    sigmas = sigmas_for(get_sampler("Euler a"), "Automatic", 4, sd_sigmas)
    x = torch.randn(1, 4, 4, 4) * sigmas[0]
    with pytest.raises(SamplerError, match="noise_sampler"):
        get_sampler("Euler a")(ToyDenoiser(), x, sigmas)
    state = torch.get_rng_state()
    get_sampler("Euler")(ToyDenoiser(), x, sigmas)
    get_sampler("Euler a")(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x))
    assert torch.equal(state, torch.get_rng_state())


def test_bad_sampler_options_are_sampler_errors() -> None:
    from emaki.sampling.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
    from emaki.sampling.dpmpp_sde import sample_dpmpp_2m_sde

    x, sigmas = torch.zeros(1, 4, 2, 2), torch.tensor([2.0, 1.0, 0.0])
    with pytest.raises(SamplerError, match="solver_type"):
        sample_dpmpp_2m_sde(ToyDenoiser(), x, sigmas, solver_type="euler")
    with pytest.raises(SamplerError, match="order 4"):
        sample_dpm_adaptive(ToyDenoiser(), x, sigmas, order=4)
    with pytest.raises(SamplerError, match="positive"):
        sample_dpm_fast(ToyDenoiser(), x, sigmas, sigma_min=0.0)


def test_same_noise_same_result(sd_sigmas: torch.Tensor) -> None:
    sigmas = sigmas_for(get_sampler("Euler a"), "Automatic", 5, sd_sigmas)
    x = torch.randn(1, 4, 4, 4) * sigmas[0]
    a = get_sampler("Euler a")(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 3))
    b = get_sampler("Euler a")(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 3))
    c = get_sampler("Euler a")(ToyDenoiser(), x, sigmas, noise_sampler=NoiseStream(x, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_infotext_schedule_type() -> None:
    from emaki.sampling import infotext_schedule_type

    assert infotext_schedule_type("DPM++ 2M", "Automatic") == "Karras"
    assert infotext_schedule_type("Euler", "Automatic") is None
    assert infotext_schedule_type("Euler", "Uniform") == "Uniform"
    assert infotext_schedule_type("Euler a", "Karras") == "Karras"
    assert infotext_schedule_type("DDIM", "Karras") is None


def test_stack_conds_repeats_the_last_vector() -> None:
    a = torch.arange(6.0).reshape(3, 2)
    b = torch.zeros(5, 2)
    out = stack_conds([a, b])
    assert out.shape == (2, 5, 2)
    assert out[0, 3:].tolist() == [[4.0, 5.0], [4.0, 5.0]]

"""The opt-in speed features (`emaki.engine.speed`) on the bundled demo model: each one does less
UNet work (counted: rows per UNet call, forwards of deep blocks and cross-attention layers),
keeps the picture close to the exact path's (PSNR), is off by default, is recorded in infotext and
read back from it; and every patch is gone after the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
import torch
from engine_runner import engine_for, generate, runner_workspace

from emaki.devices import DevicePolicy
from emaki.engine.inpaint import KeptLatents
from emaki.engine.speed import (
    CrossAttentionGate,
    DeepFeatureCache,
    NegativeGuidanceMinimumSigma,
    PrecisionNote,
    guidance_of,
    speed_extensions,
)
from emaki.engine.speed.patches import CountedCalls
from emaki.engine.speed.tgate import cross_attentions
from emaki.errors import ParamsError
from emaki.infotext import parse_infotext
from emaki.infotext_codec import decode_infotext
from emaki.params import GenerationParams, speed_preset
from emaki.sampling.denoiser import CFGDenoiser

PROMPT = "1girl, solo, pink hair, twintails, green eyes, smile, blue background"
STEPS = 8
OFF = {"s_min_uncond": 0.0, "s_min_uncond_all": False, "cache_interval": 0, "gate_step": 0, "token_merging_ratio": 0.0,
       "token_merging_ratio_hr": 0.0}


def params(**fields: object) -> GenerationParams:
    values: dict[str, object] = {"prompt": PROMPT, "negative_prompt": "lowres", "seed": 11, "steps": STEPS,
                                 "sampler_name": "Euler"}
    return GenerationParams.create(**(values | fields))


def unet() -> torch.nn.Module:
    return engine_for(runner_workspace()).load(None).components.unet


def pixels(p: GenerationParams, **options: object) -> np.ndarray:
    return np.asarray(generate(p, save=False, **options).images[0].image).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@contextmanager
def counting(module: torch.nn.Module, measure: Callable[[tuple], int] = lambda args: 1) -> Iterator[list[int]]:
    """What `measure` makes of each forward of `module` (a count, the batch size...)."""
    seen: list[int] = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(measure(args)))
    try:
        yield seen
    finally:
        handle.remove()


def rows(args: tuple) -> int:
    return int(args[0].shape[0])


@pytest.fixture(scope="module")
def exact() -> np.ndarray:
    return pixels(params())


# --- off by default ---

def test_speed_features_are_off_by_default_and_change_nothing(exact):
    assert [type(e) for e in speed_extensions(GenerationParams())] == [PrecisionNote]
    assert {k: getattr(GenerationParams(), k) for k in OFF} == OFF
    with counting(unet(), rows) as seen:
        off = pixels(params(**(OFF | {"cache_interval": 1})))  # an interval of 1 is every step: off
    assert seen == [2] * STEPS  # prompt and negative prompt in one batch, every step
    assert np.array_equal(off, exact)
    assert "NGMS" not in (info := generate(params(), save=False).images[0].infotext)
    assert not {"Cache interval", "Gate step", "Precision"} & parse_infotext(info).keys()


# --- NGMS ---

def test_ngms_skips_the_negative_prompt_every_other_step_below_its_sigma(exact):
    with counting(unet(), rows) as seen:
        result = generate(params(s_min_uncond=3.0), save=False)
    skipped = [i for i, n in enumerate(seen) if n == 1]
    assert len(seen) == STEPS and skipped and set(seen) == {1, 2}
    assert all(i % 2 == 1 for i in skipped)  # every other call (A1111's default)
    assert seen[:2] == [2, 2]  # the first steps are above sigma 3
    assert skipped == [i for i in range(skipped[0], STEPS) if i % 2 == 1]  # and every odd one below
    assert psnr(np.asarray(result.images[0].image).astype(np.float64), exact) > 35
    assert parse_infotext(result.images[0].infotext)["NGMS"] == "3"


def test_ngms_all_steps_skips_every_step_below_its_sigma(exact):
    with counting(unet(), rows) as seen:
        result = generate(params(s_min_uncond=3.0, s_min_uncond_all=True), save=False)
    first = seen.index(1)
    assert first >= 2 and seen == [2] * first + [1] * (STEPS - first)
    assert psnr(np.asarray(result.images[0].image).astype(np.float64), exact) > 30
    fields = parse_infotext(result.images[0].infotext)
    assert (fields["NGMS"], fields["NGMS all steps"]) == ("3", "True")


def test_ngms_that_never_skips_is_not_written():
    """A1111 writes NGMS once it has skipped a step: never, below the lowest sigma."""
    result = generate(params(s_min_uncond=0.001), save=False)
    assert "NGMS" not in parse_infotext(result.images[0].infotext)


class Fixed:
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def at(self, step: int) -> torch.Tensor:
        return self.value


class Parts:
    def __init__(self, *parts: tuple[Fixed, float]) -> None:
        self.parts = list(parts)


class FakeModel:
    """A denoiser whose prediction is the context's mean: each row tells which prompt it saw."""

    model_sigmas = torch.linspace(0.03, 14.6, 1000)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x * 0 + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


fake_model = FakeModel()


def test_a_skipped_negative_pass_takes_the_first_part_at_scale_one_as_a1111():
    """x0 = c_1 + Σ w_i (c_i − c_1): the first AND part stands in for the unconditional one."""
    c1, c2, u = (Fixed(torch.full((77, 4), v)) for v in (1.0, 5.0, -3.0))
    cfg = CFGDenoiser(fake_model, [Parts((c1, 1.0), (c2, 0.5))], [u], cfg_scale=7.0)  # type: ignore[arg-type]
    x, sigma = torch.zeros(1, 4, 2, 2), torch.tensor([1.0])
    assert torch.allclose(cfg(x, sigma), torch.full_like(x, -3 + 7 * (1 + 3) + 3.5 * (5 + 3)))
    cfg.skip_uncond.append(lambda call, s: call == 1)
    assert torch.allclose(cfg(x, sigma), torch.full_like(x, 1 + 0.5 * (5 - 1)))
    assert (cfg.step, cfg.skipped_uncond, cfg.owners) == (2, 1, [0, 0])


def test_every_rule_hears_of_every_call():
    ngms = NegativeGuidanceMinimumSigma(2.0, all_steps=True)
    cfg = CFGDenoiser(fake_model, [Parts((Fixed(torch.ones(77, 4)), 1.0))],  # type: ignore[arg-type]
                      [Fixed(torch.zeros(77, 4))], cfg_scale=7.0)
    cfg.skip_uncond += [lambda call, s: True, ngms.skips]
    cfg(torch.zeros(1, 4, 2, 2), torch.tensor([1.0]))
    assert ngms.skipped == 1


# --- DeepCache ---

@pytest.mark.parametrize(("interval", "full_steps", "bound"), [(2, [0, 2, 4, 6], 25), (3, [0, 3, 6], 17)])
def test_cache_interval_runs_the_deep_blocks_only_every_n_steps(exact, interval, full_steps, bound):
    model = unet()
    with counting(model.mid_block.resnets[0]) as deep, counting(model.up_blocks[-1].resnets[-1]) as outer, \
            counting(model.down_blocks[-1]) as deepest_down:
        result = generate(params(cache_interval=interval), save=False)
    assert len(deep) == len(full_steps) and len(outer) == STEPS and len(deepest_down) == STEPS  # (a stub)
    assert psnr(np.asarray(result.images[0].image).astype(np.float64), exact) > bound
    assert parse_infotext(result.images[0].infotext)["Cache interval"] == str(interval)


def test_cache_keeps_features_per_unet_call_when_prompt_and_negative_differ_in_length():
    """A prompt of two 75-token chunks against a one-chunk negative: two UNet calls a step,
    each reusing its own features (the conditional ones for the prompt's call)."""
    long_prompt = ", ".join([PROMPT] * 6)
    model = unet()
    exact = pixels(params(prompt=long_prompt))
    with counting(model, rows) as seen, counting(model.mid_block.resnets[0], rows) as deep:
        cached = pixels(params(prompt=long_prompt, cache_interval=2))
    assert seen == [1, 1] * STEPS and deep == [1, 1] * (STEPS // 2)
    assert psnr(cached, exact) > 25


# --- T-GATE ---

def test_gate_step_stops_cross_attention_and_the_negative_prompt_from_that_step(exact):
    model, gate = unet(), 3
    layers = cross_attentions(model)
    assert layers
    with ExitStack() as stack:
        seen = stack.enter_context(counting(model, rows))
        calls = [stack.enter_context(counting(layer.to_q)) for layer in layers.values()]
        result = generate(params(gate_step=gate), save=False)
    assert seen == [2] * gate + [1] * (STEPS - gate)
    assert all(len(c) == gate for c in calls)  # each layer computed before the gate only
    assert psnr(np.asarray(result.images[0].image).astype(np.float64), exact) > 25
    assert parse_infotext(result.images[0].infotext)["Gate step"] == str(gate)


def test_a_gate_past_the_last_step_changes_nothing(exact):
    assert np.array_equal(pixels(params(gate_step=STEPS)), exact)


# --- together, read back, undone ---

def test_features_together_round_trip_through_infotext_and_leave_the_model_as_it_was(exact):
    p = params(s_min_uncond=2.0, s_min_uncond_all=True, cache_interval=2, gate_step=5)
    result = generate(p, save=False)
    text = result.images[0].infotext
    fields = parse_infotext(text)
    assert {k: fields[k] for k in ("NGMS", "NGMS all steps", "Cache interval", "Gate step")} == {
        "NGMS": "2", "NGMS all steps": "True", "Cache interval": "2", "Gate step": "5"}
    back = decode_infotext(text)
    assert {k: getattr(back, k) for k in OFF} == {k: getattr(p, k) for k in OFF}
    again = generate(back.updated(rng="CPU", model=None), save=False)
    assert np.array_equal(np.asarray(again.images[0].image), np.asarray(result.images[0].image))
    model = unet()
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert not model._forward_pre_hooks and not model.up_blocks[-2]._forward_hooks
    assert np.array_equal(pixels(params()), exact)


def test_features_run_in_both_passes_of_a_hires_fix():
    plain = params(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5)
    model = unet()
    with counting(model, rows) as seen:
        result = generate(plain.updated(cache_interval=2, gate_step=2), save=False)
    assert result.images[0].image.size == (96, 96)
    assert seen == [2, 2, 1, 1, 1, 1, 1, 1] + [2, 2, 1, 1]  # each pass gated from its own step 2
    assert psnr(np.asarray(result.images[0].image).astype(np.float64), pixels(plain)) > 14  # measured 16.4


def test_the_cfg_denoiser_is_found_inside_the_wrappers_of_other_extensions():
    cfg = CFGDenoiser(fake_model, [], [], 7.0)  # type: ignore[arg-type]
    wrapped = KeptLatents(CountedCalls(cfg, DeepFeatureCache(2)), torch.ones(1), torch.zeros(1))
    assert guidance_of(wrapped) is cfg
    assert wrapped.model_sigmas is cfg.model_sigmas  # what samplers read passes through
    with pytest.raises(TypeError, match="wraps no CFGDenoiser"):
        guidance_of(lambda x, sigma: x)


def test_each_feature_is_its_own_extension():
    extensions = speed_extensions(params(s_min_uncond=1.0, cache_interval=3, gate_step=4))
    assert [type(e) for e in extensions] == [PrecisionNote, NegativeGuidanceMinimumSigma, CrossAttentionGate,
                                            DeepFeatureCache]


# --- precision, presets, the CLI ---

def test_a_run_not_in_fp32_says_its_precision():
    result = generate(params(steps=2), save=False, policy=DevicePolicy.choose("bf16", "cpu", threads=1))
    assert parse_infotext(result.images[0].infotext)["Precision"] == "bf16"


def test_an_unset_ngms_from_the_a1111_api_is_off():
    assert GenerationParams.create(s_min_uncond=None).s_min_uncond == 0.0


def test_speed_presets():
    assert speed_preset("exact", 30) == OFF
    fast = speed_preset("fast", 20)
    assert GenerationParams.create(**fast) != GenerationParams()
    with pytest.raises(ParamsError, match="speed: expected exact or fast, got 'turbo'"):
        speed_preset("turbo", 20)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from emaki.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        captured = capsys.readouterr()
        return int(stop.code or 0), captured.out, captured.err
    captured = capsys.readouterr()
    return 0, captured.out, captured.err


def test_cli_options_the_preset_under_them_and_from_a_png(tmp_path, capsys):
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "generate", PROMPT, "--steps", "6", "--seed", "3", "--speed", "fast",
                                 "--ngms", "2.5", "--ngms-all-steps", "--cache-interval", "2", "--out", str(out),
                                 "--precision", "fp32")
    assert code == 0, err
    fields = parse_infotext(open_infotext(printed))
    assert (fields["NGMS"], fields["NGMS all steps"], fields["Cache interval"]) == ("2.5", "True", "2")
    assert fields["Gate step"] == str(speed_preset("fast", 6)["gate_step"])  # from the preset
    assert fields["Token merging ratio"] == "0.5"
    code, printed, err = run_cli(capsys, "generate", "--from", printed.strip(), "--speed", "exact", "--out",
                                 str(out), "--precision", "fp32")
    assert code == 0, err
    assert not {"NGMS", "Cache interval", "Gate step", "Token merging ratio"} & parse_infotext(
        open_infotext(printed)).keys()


def open_infotext(path: str) -> str:
    from emaki.infotext import read_infotext

    return read_infotext(path.strip()) or ""

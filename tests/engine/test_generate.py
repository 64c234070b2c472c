"""txt2img engine on a tiny random model: determinism, seeds, batches, CLIP skip, progress."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from emaki.errors import Interrupted, ModelLoadError
from engine_runner import generate
from emaki.params import GenerationParams


def run(model, **fields):
    params = GenerationParams.create(**({"prompt": "1girl, red hair", "negative_prompt": "lowres", "model": str(model),
                                         "seed": 1234, "steps": 3, "width": 32, "height": 32} | fields))
    return generate(params, save=False)


def pixels(result, index=0):
    return np.asarray(result.images[index].image).astype(np.int16)


def test_same_parameters_give_the_same_pixels(tiny_safetensors):
    assert np.array_equal(pixels(run(tiny_safetensors)), pixels(run(tiny_safetensors)))


def test_seed_and_prompt_change_the_image(tiny_safetensors):
    base = pixels(run(tiny_safetensors))
    assert not np.array_equal(base, pixels(run(tiny_safetensors, seed=1235)))
    assert not np.array_equal(base, pixels(run(tiny_safetensors, prompt="1boy, blue hair")))


def test_random_seed_is_resolved_and_recorded(tiny_safetensors):
    result = run(tiny_safetensors, seed=-1)
    seed = result.images[0].seed
    assert 0 <= seed < 2**32 and result.params.seed == seed
    assert f"Seed: {seed}," in result.images[0].infotext
    assert np.array_equal(pixels(result), pixels(run(tiny_safetensors, seed=seed)))


def test_batch_image_i_equals_a_single_image_with_seed_plus_i(tiny_safetensors):
    batch = run(tiny_safetensors, batch_size=2, n_iter=2)
    assert [im.seed for im in batch.images] == [1234, 1235, 1236, 1237]
    alone = run(tiny_safetensors, seed=1237)
    assert np.abs(pixels(batch, 3) - pixels(alone)).max() <= 1


def test_clip_skip_changes_the_conditioning(tiny_safetensors):
    one = run(tiny_safetensors)
    two = run(tiny_safetensors, clip_skip=2)
    assert not np.array_equal(pixels(one), pixels(two))
    assert "Clip skip: 2" in two.images[0].infotext and "Clip skip" not in one.images[0].infotext


def test_long_prompt_is_chunked_not_truncated(tiny_safetensors):
    long_a = ", ".join(["masterpiece"] * 60 + ["red hair"])
    long_b = ", ".join(["masterpiece"] * 60 + ["blue eyes"])
    # The tags that differ sit past token 75: a truncating encoder would give equal images.
    assert not np.array_equal(pixels(run(tiny_safetensors, prompt=long_a)),
                              pixels(run(tiny_safetensors, prompt=long_b)))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M Karras"])
def test_foundation_samplers_run(tiny_safetensors, sampler):
    result = run(tiny_safetensors, sampler_name=sampler)
    assert result.images[0].image.size == (32, 32)
    assert f"Sampler: {sampler.replace(' Karras', '')}," in result.images[0].infotext


def test_progress_and_interrupt(tiny_safetensors):
    events = []
    params = GenerationParams.create(prompt="x", model=str(tiny_safetensors), seed=1, steps=4, width=32, height=32)
    generate(params, save=False, progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and all(e.steps == 4 for e in events)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        generate(params, save=False, interrupt=stop)


def test_ckpt_and_diffusers_folder_generate_the_same_image_as_the_file_they_came_from(
        tiny_safetensors, tiny_diffusers):
    assert np.array_equal(pixels(run(tiny_safetensors)), pixels(run(tiny_diffusers)))


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="nothing.safetensors"):
        run(tmp_path / "nothing.safetensors")


def test_bf16_precision_runs_close_to_fp32(tiny_safetensors):
    from emaki.devices import DevicePolicy

    params = GenerationParams.create(prompt="1girl", model=str(tiny_safetensors), seed=3, steps=3, width=32,
                                     height=32, sampler_name="Euler")
    full = np.asarray(generate(params, save=False).images[0].image).astype(np.int16)
    half = np.asarray(generate(params, save=False, policy=DevicePolicy.choose("bf16")).images[0].image)
    assert np.abs(full - half.astype(np.int16)).mean() < 8


def test_every_sampler_runs_by_name_through_the_engine(tiny_safetensors):
    from emaki.sampling import SAMPLERS

    names = [s.name for s in (SAMPLERS.values() if isinstance(SAMPLERS, dict) else SAMPLERS)]
    assert len(names) >= 18
    for name in names:
        params = GenerationParams.create(prompt="1girl", model=str(tiny_safetensors), seed=9, steps=2,
                                         width=16, height=16, sampler_name=name)
        first = pixels(generate(params, save=False))
        assert np.array_equal(first, pixels(generate(params, save=False))), name


def test_lcm_calls_the_unet_at_lcm_timesteps_with_the_boundary_condition():
    import torch

    from emaki.models.components import sd_alphas_cumprod
    from emaki.models.configs import tiny_config
    from emaki.sampling.denoiser import DiscreteEpsDenoiser
    from emaki.sampling.lcm import lcm_boundary, lcm_timestep

    seen = []

    def eps_model(x, t, context):
        seen.append(t.clone())
        return torch.full_like(x, 0.5)

    alphas = sd_alphas_cumprod(tiny_config())
    plain = DiscreteEpsDenoiser(eps_model, alphas)
    lcm = DiscreteEpsDenoiser(eps_model, alphas, lcm=True)
    x, sigma = torch.ones(1, 4, 2, 2), torch.tensor([3.0])
    x0 = plain(x, sigma, torch.zeros(1, 1, 1))
    out = lcm(x, sigma, torch.zeros(1, 1, 1))
    assert torch.allclose(seen[1], lcm_timestep(sigma, lcm.model_sigmas).float())
    assert seen[1].item() % 20 == 19 and seen[0].item() % 1 != 0  # quantised vs interpolated
    assert torch.allclose(out, lcm_boundary(x, x0, sigma, lcm.model_sigmas))


def test_model_hash_is_remembered_in_the_hash_cache(tiny_safetensors):
    import json

    from engine_runner import ONE_THREAD, runner_workspace
    from emaki.engine import Engine

    params = GenerationParams.create(prompt="a", model=str(tiny_safetensors), seed=1, steps=1, width=32, height=32)
    result = Engine(runner_workspace(), ONE_THREAD).generate(params, save=False)  # a fresh engine: the model loads
    files = json.loads(runner_workspace().hash_cache.read_text())["files"]
    entry = files[str(tiny_safetensors.resolve())]
    assert f"Model hash: {entry['sha256'][:10]}," in result.images[0].infotext


@pytest.mark.parametrize("sampler, eta, field", [
    ("Euler a", 1.0, None),  # k-diffusion's default: not written
    ("Euler a", 0.5, "Eta: 0.5"),
    ("Euler", 0.5, None),  # Euler takes no eta
    ("DDIM", 0.0, None),  # DDIM's default
    ("DDIM", 0.3, "Eta DDIM: 0.3"),
])
def test_eta_is_recorded_as_a1111_does(tiny_safetensors, sampler, eta, field):
    text = run(tiny_safetensors, sampler_name=sampler, eta=eta, steps=2).images[0].infotext
    if field is None:
        assert "Eta" not in text
    else:
        assert field + "," in text


def test_eta_ddim_is_read_back():
    from emaki.infotext import parse_infotext
    from emaki.infotext_codec import params_from_fields

    fields = parse_infotext("x\nSteps: 2, Sampler: DDIM, Seed: 1, Size: 64x64, Eta DDIM: 0.3")
    assert params_from_fields(fields).eta == 0.3

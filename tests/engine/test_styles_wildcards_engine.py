"""Styles and wildcards through the engine (demo model, 64×64, 2 steps): each image its own
prompt, made from its seed, judged by the policy before anything loads, recorded in its
infotext; styles taken back out of a PNG read with `--from`."""

from __future__ import annotations

import numpy as np
import pytest

from emaki.cli.generate import params_from_image
from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.errors import ParamsError, PolicyViolation
from emaki.infotext import parse_infotext
from emaki.params import GenerationParams
from emaki.workspace import Workspace

BASE = {"steps": 2, "width": 64, "height": 64, "seed": 20}
STYLES = ('name,prompt,negative_prompt\n'
          '"frame","masterpiece, {prompt}, anime coloring","lowres, {prompt}"\n'
          '"tail","soft lighting",""\n'
          '"bad","{prompt}, nude",""\n')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    home = tmp_path_factory.mktemp("styles-home")
    (home / "styles.csv").write_text(STYLES, encoding="utf-8")
    wildcards = home / "wildcards"
    (wildcards / "people").mkdir(parents=True)
    (wildcards / "hair.txt").write_text("red\nblue\nsilver\ngreen\nblack\n")
    (wildcards / "people" / "age.txt").write_text("adult woman\nloli, nude\n")
    (wildcards / "nets.txt").write_text("<hypernet:a:1>\n<hypernet:b:1>\n")
    return Workspace(home)


@pytest.fixture(scope="module")
def engine(workspace: Workspace) -> Engine:
    return Engine(workspace, DevicePolicy.choose("fp32", "cpu", threads=1))


def make(engine: Engine, **fields):
    return engine.generate(GenerationParams.create(**(BASE | fields)), save=False)


def pixels(image) -> np.ndarray:
    return np.asarray(image.image).astype(np.int16)


def test_a_batch_with_a_wildcard_gives_each_image_its_own_prompt(engine):
    result = make(engine, prompt="1girl, __hair__ hair", batch_size=2, n_iter=2)
    prompts = [image.prompt for image in result.images]
    assert len(set(prompts)) > 1 and all(p.startswith("1girl, ") and p.endswith(" hair") for p in prompts)
    for image in result.images:
        fields = parse_infotext(image.infotext)
        assert fields["Prompt"] == image.prompt and fields["Seed"] == str(image.seed)
        assert fields["Wildcard prompt"] == "1girl, __hair__ hair"
    assert result.params.prompt == "1girl, __hair__ hair"  # the params as given: the template
    # Each image is conditioned on its own prompt: the same as made alone from that prompt and seed.
    assert prompts[2] != prompts[3]  # two prompts in one batch
    for index in (1, 3):
        alone = make(engine, prompt=prompts[index], seed=result.images[index].seed).images[0]
        assert "Wildcard prompt" not in alone.infotext
        assert np.abs(pixels(alone) - pixels(result.images[index])).max() <= 1


def test_the_same_seed_makes_the_same_choice(engine):
    batch = make(engine, prompt="__hair__, {smile|frown}", negative_prompt="{lowres|blurry}", batch_size=4)
    again = make(engine, prompt="__hair__, {smile|frown}", negative_prompt="{lowres|blurry}", batch_size=4)
    assert [i.prompt for i in batch.images] == [i.prompt for i in again.images]
    third = make(engine, prompt="__hair__, {smile|frown}", negative_prompt="{lowres|blurry}", seed=22).images[0]
    assert (third.prompt, third.negative_prompt) == (batch.images[2].prompt, batch.images[2].negative_prompt)
    assert "Wildcard negative prompt: {lowres|blurry}" in third.infotext


def test_a_wildcard_expanding_to_refused_words_is_refused_before_anything_runs(workspace, monkeypatch):
    engine = Engine(workspace, DevicePolicy.choose("fp32", "cpu", threads=1))
    monkeypatch.setattr(engine, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    seeds = [seed for seed in range(3, 40) if "loli" in _expanded(engine, seed)]
    assert seeds, "no seed chose the refused line"
    with pytest.raises(PolicyViolation):
        make(engine, prompt="1girl, __people/age__", seed=seeds[0])
    with pytest.raises(PolicyViolation):  # one image of a batch is enough
        make(engine, prompt="1girl, __people/age__", seed=seeds[0] - 3, batch_size=4)
    with pytest.raises(PolicyViolation):  # and a style's words are judged as the prompt is
        make(engine, prompt="1girl, child", styles=["bad"])
    with pytest.raises(ParamsError, match="'Nope'.*\"frame\", \"tail\", \"bad\""):
        make(engine, prompt="1girl", styles=["frame", "Nope"])
    with pytest.raises(ParamsError, match="other network tags"):
        make(engine, prompt="1girl, __nets__", batch_size=8)


def _expanded(engine: Engine, seed: int) -> str:
    from emaki.engine.image_prompts import workspace_run_prompts

    params = GenerationParams.create(**(BASE | {"prompt": "1girl, __people/age__", "seed": seed}))
    return workspace_run_prompts(params, [seed], engine.workspace).images[0].prompt


def test_a_style_with_a_placeholder_frames_the_prompt(engine):
    styled = make(engine, prompt="1girl, smile", negative_prompt="bad hands", styles=["frame", "tail"])
    image = styled.images[0]
    assert (image.prompt, image.negative_prompt) == ("masterpiece, 1girl, smile, anime coloring, soft lighting",
                                                     "lowres, bad hands")
    assert image.infotext.splitlines()[:2] == ["masterpiece, 1girl, smile, anime coloring, soft lighting",
                                               "Negative prompt: lowres, bad hands"]
    assert "Styles" not in image.infotext and "Wildcard" not in image.infotext  # A1111 writes neither
    assert styled.params.styles == ["frame", "tail"] and styled.params.prompt == "1girl, smile"
    plain = make(engine, prompt=image.prompt, negative_prompt=image.negative_prompt).images[0]
    assert plain.infotext == image.infotext and np.array_equal(pixels(plain), pixels(image))


def test_from_takes_the_styles_back_out_and_makes_the_same_image(engine, workspace, tmp_path):
    first = engine.generate(GenerationParams.create(**(BASE | {"prompt": "1girl, smile", "styles": ["frame"],
                                                               "negative_prompt": "bad hands"})),
                            out_dir=tmp_path).images[0]
    assert first.path is not None
    read = params_from_image(first.path, workspace)
    assert (read.prompt, read.negative_prompt, read.styles) == ("1girl, smile", "bad hands", ["frame"])
    assert params_from_image(first.path).prompt == first.prompt  # without the styles files: as written
    again = engine.generate(read, save=False).images[0]
    assert again.infotext == first.infotext and np.array_equal(pixels(again), pixels(first))


def test_hires_prompts_follow_each_image(engine):
    fields = {"prompt": "1girl, __hair__ hair", "enable_hr": True, "hr_second_pass_steps": 1,
              "denoising_strength": 0.5, "hr_scale": 1.5, "seed": 23}
    batch = make(engine, batch_size=3, **fields)
    assert len({i.prompt for i in batch.images}) > 1
    alone = make(engine, **(fields | {"prompt": batch.images[2].prompt, "seed": batch.images[2].seed})).images[0]
    assert np.abs(pixels(alone) - pixels(batch.images[2])).max() <= 1

"""X/Y/Z plot values and axes, checked before anything runs: A1111's value syntax (CSV quoting,
int and float ranges, negative numbers), its axis numbering, and one clear error per bad value."""

from __future__ import annotations

import shutil

import pytest

from emaki.errors import ParamsError
from emaki.models.resolve import demo_model_path
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from emaki.xyz.axes import AXES, a1111_axes, find_axis, reorder_prompt, reweight_loras
from emaki.xyz.plan import plan_grid
from emaki.xyz.spec import AxisSpec, GridSpec
from emaki.xyz.values import MAX_VALUES, expand_floats, expand_ints, split_values

PARAMS = GenerationParams(prompt="1girl, red hair, smile, <lora:flat:0.8>", negative_prompt="lowres",
                          width=64, height=64, seed=7)


def values_of(axis: str, values: str | list, params: GenerationParams = PARAMS, workspace: Workspace | None = None):
    plan = plan_grid(params, GridSpec(x=AxisSpec(axis=axis, values=values)), workspace)
    return plan.axes[0].values.values


def test_values_split_on_commas_with_csv_quoting_and_line_breaks():
    assert split_values('Euler a, "DPM++ 2M, Karras" ,DDIM') == ["Euler a", "DPM++ 2M, Karras", "DDIM"]
    assert split_values("red\nblue, green") == ["red", "blue", "green"]
    assert split_values('a, "b ""quoted"""') == ["a", 'b "quoted"']


@pytest.mark.parametrize("text, expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-9 (+2)", [1, 3, 5, 7, 9]),
    ("1-10 (+4)", [1, 5, 9]),
    ("10-1 (-3)", [10, 7, 4, 1]),
    ("5-3", [5, 4, 3]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("-5--2", [-5, -4, -3, -2]),
    ("-2-2 (+2)", [-2, 0, 2]),
    ("- 3 - 3 [3]", [-3, 0, 3]),
    ("7", [7]),
    ("-1", [-1]),
])
def test_int_ranges(text, expected):
    assert expand_ints([text]) == expected


@pytest.mark.parametrize("text, expected", [
    ("0.5-1.5 (+0.5)", [0.5, 1.0, 1.5]),
    ("0.1-0.3 (+0.1)", [0.1, 0.2, 0.3]),
    ("1-2 [3]", [1.0, 1.5, 2.0]),
    ("-1--0.5 (+0.25)", [-1.0, -0.75, -0.5]),
    ("2-1 (-0.5)", [2.0, 1.5, 1.0]),
    ("7.5", [7.5]),
    ("-0.5", [-0.5]),
    ("1e-3", [0.001]),
])
def test_float_ranges(text, expected):
    assert expand_floats([text]) == expected


@pytest.mark.parametrize("text, fragment", [
    ("abc", "'abc' is not a whole number"),
    ("1.5", "'1.5' is not a whole number"),
    ("1-5 (+0)", "a step of 0"),
    ("1-5 (-1)", "never goes from 1 to 5"),
    ("1-10 [0]", "at least 1"),
    (f"1-{MAX_VALUES + 1}", f"at most {MAX_VALUES}"),
])
def test_bad_int_values_name_the_value(text, fragment):
    with pytest.raises(ParamsError, match=fragment.replace("(", r"\(").replace("+", r"\+")):
        expand_ints([text])


@pytest.mark.parametrize("text", ["nan", "inf", "seven", "1-2 (+x)"])
def test_bad_float_values_are_refused(text):
    with pytest.raises(ParamsError, match="number"):
        expand_floats([text])


def test_a_bad_value_in_a_grid_names_the_axis_and_the_value():
    with pytest.raises(ParamsError) as caught:
        values_of("Steps", "10, twelve")
    assert str(caught.value) == "X: Steps: 'twelve' is not a whole number or a range such as 1-5, 1-9 (+2), 1-10 [5]"


def test_a_value_out_of_its_field_range_names_the_cell():
    with pytest.raises(ParamsError, match=r"grid cell \(X Steps = 0\): invalid parameter steps"):
        values_of("Steps", "0, 1")


def test_lists_take_ranges_too_and_types_follow_the_axis():
    assert values_of("Steps", ["1-3", 10]) == [1, 2, 3, 10]
    assert values_of("CFG Scale", [5, "7.5"]) == [5.0, 7.5]
    assert values_of("Steps", [20.0, 2]) == [20, 2]


def test_axis_names_any_case_and_aliases():
    assert find_axis("cfg scale").label == "CFG Scale"
    assert find_axis("Checkpoint").label == "Checkpoint name"
    assert find_axis("Lora weight").label == "LoRA weight"


def test_unknown_and_not_yet_supported_axes_are_clear_errors():
    with pytest.raises(ParamsError, match=r"unknown axis 'Colour'; expected one of: Nothing, Seed, "):
        find_axis("Colour")
    with pytest.raises(ParamsError, match=r"axis 'Sigma Churn': emaki has no such setting yet"):
        find_axis("sigma churn")
    with pytest.raises(ParamsError, match="^X: axis 'Face restore'"):
        values_of("Face restore", "a, b")


def test_a1111_numbers_its_axes_per_tab():
    txt2img, img2img = a1111_axes(img2img=False), a1111_axes(img2img=True)
    assert len(txt2img) == 42 and len(img2img) == 41
    assert [txt2img[i].label for i in (0, 1, 4, 5, 6, 7, 9, 10, 11, 29, 39, 41)] == [
        "Nothing", "Seed", "Steps", "Hires steps", "CFG Scale", "Prompt S/R", "Sampler", "Hires sampler",
        "Checkpoint name", "VAE", "RNG source", "Size"]
    assert [img2img[i].label for i in (5, 6, 9, 10, 27, 28)] == [
        "CFG Scale", "Image CFG Scale", "Sampler", "Checkpoint name", "Cond. Image Mask Weight", "VAE"]
    ours = [axis.label for axis in AXES if axis not in txt2img and axis not in img2img]
    assert ours == ["LoRA weight", "Hypernet str.", "Cache interval", "Gate step", "Speed"]


def test_the_speed_axis_puts_each_preset_for_the_cells_steps():
    plan = plan_grid(PARAMS.updated(steps=12, token_merging_ratio=0.3),
                     GridSpec(x=AxisSpec(axis="Speed", values="exact, FAST")))
    exact, fast = (cell.params for cell in plan.cells)
    assert (exact.s_min_uncond, exact.gate_step, exact.token_merging_ratio) == (0.0, 0, 0.0)
    assert (fast.s_min_uncond, fast.s_min_uncond_all, fast.gate_step, fast.token_merging_ratio) == (4.0, True, 6, 0.5)
    with pytest.raises(ParamsError, match="Speed: 'turbo' is not one of exact, fast"):
        values_of("Speed", "exact, turbo")


def test_prompt_search_and_replace_needs_its_first_value_in_a_prompt():
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Prompt S/R", values="red, blue, lowres, ")))
    assert [(c.params.prompt[:16], c.params.negative_prompt) for c in plan.cells] == [
        ("1girl, red hair,", "lowres"), ("1girl, blue hair", "lowres"), ("1girl, lowres ha", "lowres"),
        ("1girl,  hair, sm", "lowres")]
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Prompt S/R", values="lowres, highres")))
    assert plan.cells[1].params.negative_prompt == "highres"
    with pytest.raises(ParamsError, match=r"X: Prompt S/R: the first value 'green' .* does not occur in the prompt"):
        values_of("Prompt S/R", "green, blue")


def test_prompt_order_makes_every_order_of_its_tokens():
    assert reorder_prompt("a, b, c", ("c", "a")) == "c, b, a"
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Prompt order", values="red hair, smile")))
    assert [c.params.prompt for c in plan.cells] == ["1girl, red hair, smile, <lora:flat:0.8>",
                                                     "1girl, smile, red hair, <lora:flat:0.8>"]
    assert plan.axes[0].values.labels == ["red hair, smile", "smile, red hair"]
    with pytest.raises(ParamsError, match="Prompt order: 'tail' does not occur in the prompt"):
        values_of("Prompt order", "smile, tail")


def test_lora_weight_sets_every_lora_tag_weight():
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="LoRA weight", values="0-1 [3]")))
    assert [c.params.prompt.split(", ")[-1] for c in plan.cells] == [
        "<lora:flat:0.0>", "<lora:flat:0.5>", "<lora:flat:1.0>"]
    assert reweight_loras("<lyco:a:te=0.2:unet=0.4>, <lora:b:1:1:8>", 0.7) == "<lyco:a:te=0.7:unet=0.7>, <lora:b:0.7:0.7:8>"
    assert reweight_loras("<lora:b:unet=0.3>", 2) == "<lora:b:2:unet=2>"
    with pytest.raises(ParamsError, match="LoRA weight: the prompt has no <lora:name:weight> tag"):
        values_of("LoRA weight", "0.5, 1", PARAMS.updated(prompt="1girl"))


def test_unknown_samplers_schedules_and_choices_are_refused():
    assert values_of("Sampler", "Euler a, DPM++ 2M Karras") == ["Euler a", "DPM++ 2M Karras"]
    with pytest.raises(ParamsError, match="X: Sampler: unknown sampler 'Euler b'"):
        values_of("Sampler", "Euler a, Euler b")
    with pytest.raises(ParamsError, match="X: Schedule type: unknown schedule 'Wobbly'"):
        values_of("Schedule type", "Karras, Wobbly")
    with pytest.raises(ParamsError, match="X: RNG source: 'TPU' is not one of GPU, CPU, NV"):
        values_of("RNG source", "CPU, TPU")
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Schedule type", values="karras"),
                                      y=AxisSpec(axis="RNG source", values="nv")))
    assert (plan.cells[0].params.scheduler, plan.cells[0].params.rng) == ("Karras", "NV")


def test_checkpoint_and_vae_names_are_looked_up_before_anything_runs(tmp_path):
    workspace = Workspace(tmp_path)
    (tmp_path / "models" / "anime").mkdir(parents=True)
    shutil.copy(demo_model_path(), tmp_path / "models" / "anime" / "flat-v2.safetensors")
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Checkpoint name",
                                                 values="emaki-demo, anime/flat-v2.safetensors [0123abcd89]")),
                     workspace)
    assert [c.params.model for c in plan.cells] == [str(demo_model_path()),
                                                   str(tmp_path / "models" / "anime" / "flat-v2.safetensors")]
    assert plan.axes[0].values.labels == ["emaki-demo", "flat-v2.safetensors [0123abcd89]"]
    with pytest.raises(ParamsError, match=r"X: Checkpoint name: no checkpoint named 'anything-v3' in "):
        values_of("Checkpoint name", "emaki-demo, anything-v3", workspace=workspace)
    with pytest.raises(ParamsError, match=r"X: VAE: kl-f8: no such VAE file"):
        values_of("VAE", "None, kl-f8", workspace=workspace)
    assert values_of("VAE", "None, Automatic", workspace=workspace) == ["None", "Automatic"]


def test_field_axes_set_their_field():
    plan = plan_grid(PARAMS.updated(enable_hr=True), GridSpec(
        x="Negative Guidance minimum sigma: 0, 0.5", y="Hires steps: 0-2 [2]", z="Var. strength: 0.25"))
    assert [(c.params.s_min_uncond, c.params.hr_second_pass_steps, c.params.subseed_strength) for c in plan.cells] == [
        (0.0, 0, 0.25), (0.5, 0, 0.25), (0.0, 2, 0.25), (0.5, 2, 0.25)]


def test_sizes_and_hypernetwork_strength():
    plan = plan_grid(PARAMS, GridSpec(x=AxisSpec(axis="Size", values="64x64, 96x64")))
    assert [(c.params.width, c.params.height) for c in plan.cells] == [(64, 64), (96, 64)]
    with pytest.raises(ParamsError, match="X: Size: expected WIDTHxHEIGHT like 512x768, got 'big'"):
        values_of("Size", "big")
    with pytest.raises(ParamsError, match="Hypernet str.: no hypernetwork is chosen"):
        values_of("Hypernet str.", "0.5, 1")
    plan = plan_grid(PARAMS.updated(hypernetwork="anime"), GridSpec(x="Hypernet str.: 0.5, 1"))
    assert [c.params.hypernetwork_strength for c in plan.cells] == [0.5, 1.0]


def test_the_cli_form_of_an_axis():
    assert AxisSpec.parse("Sampler: Euler a, DPM++ 2M Karras") == AxisSpec(axis="Sampler",
                                                                          values="Euler a, DPM++ 2M Karras")
    assert AxisSpec.parse("Nothing") == AxisSpec(axis="Nothing")
    with pytest.raises(ParamsError, match="--x: expected 'AXIS: VALUES'"):
        AxisSpec.parse("Steps 10-30", option="--x")
    with pytest.raises(ParamsError, match="margin_size"):
        GridSpec.create(margin_size=501)
    with pytest.raises(ParamsError, match="unknown_option"):
        GridSpec.create(unknown_option=1)


def test_an_empty_axis_is_refused():
    with pytest.raises(ParamsError, match="X: Steps: no values given"):
        values_of("Steps", " ")


def test_the_size_cap_refuses_a_grid_before_it_runs():
    with pytest.raises(ParamsError, match=r"max_size_mp: the grid would be 4 megapixels \(64 cells\); the limit is 2"):
        plan_grid(PARAMS.updated(width=256, height=256), GridSpec(x="Steps: 1-8", y="Seed: 1-8", max_size_mp=2))
    with pytest.raises(ParamsError, match="max_size_mp"):  # refused before a trillion cells are made
        plan_grid(PARAMS, GridSpec(x="Seed: 1-10000", y="Var. seed: 1-10000", z="Steps: 1-10000"))
    plan_grid(PARAMS.updated(width=256, height=256), GridSpec(x="Steps: 1-8", y="Seed: 1-2", max_size_mp=2))

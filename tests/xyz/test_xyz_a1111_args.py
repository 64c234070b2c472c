"""A1111 v1.10.1's X/Y/Z plot as its API clients drive it (`scripts/xyz_grid.py`): the axis lists
of both tabs, the positional `script_args` (18, 1.6's 15, older 14), dropdown values unless
`csv_mode`, the options; the Styles axis; the axis listing with its choices; loop order and
empty numeric values. No model runs here."""

from __future__ import annotations

import shutil

import pytest

from emaki.errors import ParamsError
from emaki.models.resolve import demo_model_path
from emaki.params import GenerationParams
from emaki.server.xyz_script import grid_spec
from emaki.workspace import Workspace
from emaki.xyz.axes import a1111_axes
from emaki.xyz.listing import axis_rows
from emaki.xyz.plan import plan_grid
from emaki.xyz.spec import GridSpec

PARAMS = GenerationParams(prompt="1girl, smile", width=64, height=64, steps=2, seed=7)

# A1111 v1.10.1 `axis_options`, in order, with the tab each row shows on (None: both).
A1111_V1_10_1 = [
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None), ("Sigma min", None),
    ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None), ("Schedule min sigma", None),
    ("Schedule max sigma", None), ("Schedule rho", None), ("Beta schedule alpha", None), ("Beta schedule beta", None),
    ("Eta", None), ("Clip skip", None), ("Denoising", None), ("Initial noise multiplier", None), ("Extra noise", None),
    ("Hires upscaler", "txt2img"), ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None),
    ("UniPC Order", None), ("Face restore", None), ("Token merging ratio", None),
    ("Token merging ratio high-res", None), ("Always discard next-to-last sigma", None),
    ("SGM noise multiplier", None), ("Refiner checkpoint", None), ("Refiner switch at", None), ("RNG source", None),
    ("FP8 mode", None), ("Size", None),
]
TXT2IMG_STYLES, IMG2IMG_STYLES = 30, 29  # the Styles row's index on each tab


def args_18(x_type, x_values="", x_dropdown=None, *, csv_mode=False, **options):
    """A1111 1.7-1.10.1's 18 `script_args`, X axis only."""
    named = {"draw_legend": True, "include_lone_images": False, "include_sub_grids": False, "no_fixed_seeds": False,
             "vary_seeds_x": False, "vary_seeds_y": False, "vary_seeds_z": False, "margin_size": 0} | options
    return [x_type, x_values, x_dropdown or [], 0, "", [], 0, "", [], *named.values(), csv_mode]


def test_the_axis_lists_are_a1111_v1_10_1s_for_both_tabs():
    for tab, img2img in (("txt2img", False), ("img2img", True)):
        expected = [label for label, only in A1111_V1_10_1 if only in (None, tab)]
        assert [axis.label for axis in a1111_axes(img2img)] == expected
    assert a1111_axes(False)[TXT2IMG_STYLES].label == a1111_axes(True)[IMG2IMG_STYLES].label == "Styles"


def test_script_args_of_a1111_1_6_15_values_with_a_checkpoint_dropdown():
    # The payload shape posted in A1111's issue threads (sd-webui-agent-scheduler #103, for A1111 1.6).
    args = [11, "", ["emaki-demo.safetensors [0123456789]", "emaki-demo"], 0, "", [], 0, "", [],
            True, False, False, False, 0, False]
    spec = grid_spec(args, img2img=False)
    assert spec.x is not None and spec.x.axis == "Checkpoint name"
    assert spec.x.texts() == ["emaki-demo.safetensors [0123456789]", "emaki-demo"]
    assert spec.y is None and spec.z is None and spec.draw_legend and not spec.vary_seeds_x
    plan = plan_grid(PARAMS, spec, Workspace(demo_model_path().parent))
    assert [c.params.model for c in plan.cells] == [str(demo_model_path())] * 2


def test_script_args_of_14_values_and_other_counts_refused():
    # 14 values (A1111 1.2-1.5), checkbox values as strings as some clients send them.
    spec = grid_spec([6, "5, 7", "", None, "", "", "", "", "", "True", "False", "false", "False", 4], img2img=False)
    assert spec.x is not None and spec.x.axis == "CFG Scale" and spec.x.texts() == ["5", "7"]
    assert spec.draw_legend and not spec.include_lone_images and spec.margin_size == 4 and spec.y is None
    with pytest.raises(ParamsError, match=r"script_args: the X/Y/Z plot takes 18 values .* 15 .* or 14 .*got 16"):
        grid_spec(args_18(4, "2, 3")[:16], img2img=False)


def test_the_options_of_18_values_reach_the_grid():
    spec = grid_spec(args_18("Steps", "2, 3", draw_legend=False, include_lone_images=True, include_sub_grids=True,
                             no_fixed_seeds=True, vary_seeds_y=True, margin_size=8), img2img=False)
    assert spec.x is not None and spec.x.axis == "Steps"  # an axis label is taken as its index
    assert (spec.draw_legend, spec.include_lone_images, spec.include_sub_grids, spec.no_fixed_seeds) == (
        False, True, True, True)
    assert (spec.vary_seeds_x, spec.vary_seeds_y, spec.vary_seeds_z, spec.margin_size) == (False, True, False, 8)
    with pytest.raises(ParamsError, match="script_args: invalid parameter margin_size"):
        grid_spec(args_18(4, "2", margin_size=900), img2img=False)


def test_a_choice_axis_reads_the_dropdown_unless_csv_mode():
    both = ("Euler, DDIM", ["Euler a", "DPM++ 2M"])
    assert grid_spec(args_18(9, *both), img2img=False).x.texts() == ["Euler a", "DPM++ 2M"]
    assert grid_spec(args_18(9, *both, csv_mode=True), img2img=False).x.texts() == ["Euler", "DDIM"]
    assert grid_spec(args_18(9, *both, csv_mode="False"), img2img=False).x.texts() == ["Euler a", "DPM++ 2M"]
    assert grid_spec(args_18(9, "Euler, DDIM"), img2img=False).x.texts() == ["Euler", "DDIM"]  # no dropdown
    # A text axis takes its text whatever the dropdown holds; img2img's Sampler is its own index.
    assert grid_spec(args_18(4, "2, 3", ["9"]), img2img=False).x.texts() == ["2", "3"]
    assert grid_spec(args_18(9, "", ["Euler"]), img2img=True).x.axis == "Sampler"


def test_axes_emaki_cannot_run_are_refused_naming_them():
    with pytest.raises(ParamsError, match="script_args: x_type 15 is the axis 'Sigma max': emaki has no such"):
        grid_spec(args_18(15, "0.1"), img2img=False)
    with pytest.raises(ParamsError, match="x_type 6 is the axis 'Image CFG Scale': emaki runs no instruct-pix2pix"):
        grid_spec(args_18(6, "1.5"), img2img=True)
    with pytest.raises(ParamsError, match=r"x_type: expected an axis index 0-41 of A1111's txt2img"):
        grid_spec(args_18(42, "1"), img2img=False)
    assert grid_spec(args_18(None, "ignored"), img2img=False).x is None  # A1111 reads None as 0, "Nothing"


@pytest.fixture
def styled(tmp_path):
    (tmp_path / "styles.csv").write_text(
        'name,prompt,negative_prompt\nframe,"masterpiece, {prompt}",lowres\ntag,anime,\n"a, b",x,\n',
        encoding="utf-8")
    return Workspace(tmp_path)


def test_the_styles_axis_adds_comma_separated_style_names_to_each_cell(styled):
    spec = grid_spec(args_18(TXT2IMG_STYLES, '"frame, tag", tag,', csv_mode=True), img2img=False)
    plan = plan_grid(PARAMS.updated(styles=["frame"]), spec, styled)
    assert [c.params.styles for c in plan.cells] == [["frame", "frame", "tag"], ["frame", "tag"], ["frame"]]
    assert plan.axes[0].values.labels == ["Styles: frame, tag", "Styles: tag", "Styles: "]
    dropdown = grid_spec(args_18(IMG2IMG_STYLES, "", ["tag", "frame"]), img2img=True)
    assert [c.params.styles for c in plan_grid(PARAMS, dropdown, styled).cells] == [["tag"], ["frame"]]
    with pytest.raises(ParamsError, match=r"X: Styles: styles: no style named 'anime'"):
        plan_grid(PARAMS, GridSpec(x="Styles: tag, anime"), styled)


def test_numeric_axes_skip_empty_values_as_a1111_does():
    plan = plan_grid(PARAMS, GridSpec(x="Steps: 2, 3,", y="CFG Scale: ,5"))
    assert [(c.params.steps, c.params.cfg_scale) for c in plan.cells] == [(2, 5.0), (3, 5.0)]
    with pytest.raises(ParamsError, match="X: Steps: no values given"):
        plan_grid(PARAMS, GridSpec(x="Steps: ,"))


def test_the_vae_loop_is_outside_the_others_and_inside_the_checkpoints(tmp_path):
    plan = plan_grid(PARAMS, GridSpec(x="Steps: 2, 3", y="VAE: None, Automatic"), Workspace(tmp_path))
    assert [(c.ix, c.iy) for c in plan.cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    plan = plan_grid(PARAMS, GridSpec(x="VAE: None, Automatic", y="Steps: 2, 3"), Workspace(tmp_path))
    assert [(c.ix, c.iy) for c in plan.cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # VAE outer


def test_the_axis_listing_gives_kinds_and_this_workspaces_choices(styled, tmp_path):
    (tmp_path / "models" / "VAE").mkdir(parents=True)
    (tmp_path / "models" / "anime").mkdir()
    shutil.copy(demo_model_path(), tmp_path / "models" / "anime" / "flat.safetensors")
    (tmp_path / "models" / "VAE" / "kl-f8.safetensors").write_bytes(b"x")
    rows = {row["name"]: row for row in axis_rows(styled)}
    assert [rows[name]["kind"] for name in ("Steps", "CFG Scale", "Prompt S/R", "Size", "Sampler")] == [
        "number", "number", "text", "text", "choice"]
    assert "choices" not in rows["Steps"] and rows["Sampler"]["mode"] == "both"
    assert rows["Styles"]["choices"] == ["frame", "tag", "a, b"]
    assert rows["Checkpoint name"]["choices"] == ["anime/flat.safetensors", "emaki-demo.safetensors"]
    assert rows["VAE"]["choices"] == ["Automatic", "None", "kl-f8.safetensors"]
    assert rows["RNG source"]["choices"] == ["GPU", "CPU", "NV"]
    assert "Karras" in rows["Schedule type"]["choices"] and "Latent" in rows["Hires upscaler"]["choices"]
    assert "Sigma Churn" not in rows and "Image CFG Scale" not in rows  # emaki cannot run these

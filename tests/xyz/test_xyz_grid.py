"""X/Y/Z plots on the demo model (64x64, 2-3 steps): cell order and seeds, the checkpoint as the
outer loop, the grid picture and its legends, the grid and cell infotexts, interrupts, refusals."""

from __future__ import annotations

import re
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from emaki.devices import DevicePolicy
from emaki.engine import Cancel, Engine
from emaki.errors import Interrupted, PolicyViolation
from emaki.models import loader
from emaki.models.resolve import demo_model_path
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from emaki.xyz import GridSpec, plan_grid, run_grid
from emaki.xyz.grid import draw_annotations, draw_xyz_grid, image_grid
from emaki.xyz.plan import loop_order

PARAMS = GenerationParams(prompt="1girl, red hair, smile", width=64, height=64, steps=2, seed=11)
ONE_THREAD = DevicePolicy.choose("fp32", "cpu", threads=1)


@pytest.fixture
def engine(tmp_path):
    return Engine(Workspace(tmp_path / "home"), ONE_THREAD)


def tiles(count: int, size: tuple[int, int] = (64, 64)) -> list[Image.Image]:
    """Cells of distinct flat colours (never white or black)."""
    return [Image.new("RGB", size, (40 + 20 * i, 200 - 15 * i, 90)) for i in range(count)]


def dark_pixels(image: Image.Image) -> int:
    return int((np.asarray(image.convert("L")) < 128).sum())


# --- the picture ---

def test_image_grid_lays_cells_in_rows_and_centres_smaller_ones():
    grid = image_grid([*tiles(3), Image.new("RGB", (32, 32), (0, 0, 255))], rows=2)
    assert grid.size == (128, 128)
    assert grid.getpixel((64 + 32, 64 + 32)) == (0, 0, 255) and grid.getpixel((64 + 4, 64 + 4)) == (255, 255, 255)


def test_legends_add_a_header_band_and_a_row_band_with_the_labels_drawn():
    cells = tiles(4)
    plain, _ = draw_xyz_grid(cells, (2, 2, 1), (["", ""], ["", ""], [""]), draw_legend=False)
    labelled, subs = draw_xyz_grid(cells, (2, 2, 1), (["Steps: 2", "Steps: 3"], ["CFG Scale: 5.0", "CFG Scale: 9.0"],
                                                     [""]), draw_legend=True)
    assert plain.size == (128, 128)
    pad_left, pad_top = labelled.width - 128, labelled.height - 128
    assert pad_left == 64 * 3 // 4 and pad_top > 0 and len(subs) == 1
    # The cells are unchanged under the bands; the bands hold text (dark pixels on white).
    assert np.array_equal(np.asarray(labelled.crop((pad_left, pad_top, labelled.width, labelled.height))),
                          np.asarray(plain))
    header, rows = labelled.crop((pad_left, 0, labelled.width, pad_top)), labelled.crop((0, pad_top, pad_left, 128))
    assert dark_pixels(header.crop((0, 0, 64, pad_top))) > 20 and dark_pixels(header.crop((64, 0, 128, pad_top))) > 20
    assert dark_pixels(rows) > 20
    assert dark_pixels(labelled.crop((0, 0, pad_left, pad_top))) == 0  # the corner stays blank


def test_no_row_labels_no_row_band_and_margins_between_cells():
    grid = draw_annotations(image_grid(tiles(4), rows=2), 64, 64, ["a", "b"], ["", ""], margin=10)
    assert grid.width == 128 + 10 and grid.height > 128 + 10
    assert grid.getpixel((64 + 5, grid.height - 5)) == (255, 255, 255)  # the margin is background


def test_z_values_make_sub_grids_side_by_side_under_their_titles():
    whole, subs = draw_xyz_grid(tiles(8), (2, 2, 2), (["x1", "x2"], ["y1", "y2"], ["Z one", "Z two"]))
    assert len(subs) == 2 and subs[0].size == subs[1].size
    title_band = whole.height - subs[0].height
    assert whole.width == 2 * subs[0].width and title_band > 0
    assert dark_pixels(whole.crop((0, 0, subs[0].width, title_band))) > 20
    assert dark_pixels(whole.crop((subs[0].width, 0, whole.width, title_band))) > 20


def test_a_missing_cell_is_black():
    whole, _ = draw_xyz_grid([tiles(1)[0], None], (2, 1, 1), (["", ""], [""], [""]), draw_legend=False)
    assert whole.getpixel((96, 32)) == (0, 0, 0)


# --- cell order and seeds ---

def test_cells_run_z_then_y_then_x_unless_an_axis_costs_more(tmp_path):
    assert loop_order((0.0, 0.0, 0.0)) == (2, 1, 0)
    plan = plan_grid(PARAMS, GridSpec(x="Steps: 2, 3", y="CFG Scale: 5, 9"))
    assert [(c.ix, c.iy) for c in plan.cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [c.index for c in plan.cells] == [0, 1, 2, 3]
    plan = plan_grid(PARAMS, GridSpec(x="Checkpoint name: emaki-demo, emaki-demo.safetensors", y="Steps: 2, 3",
                                      z="VAE: None, Automatic"), Workspace(tmp_path))
    assert [(c.ix, c.iy, c.iz) for c in plan.cells] == [
        (0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 1, 1)]


def test_seeds_minus_one_are_fixed_once_for_the_whole_grid():
    plan = plan_grid(PARAMS.updated(seed=-1), GridSpec(x="Steps: 2, 3", y="Var. seed: -1, 5, -1"))
    seeds = {c.params.seed for c in plan.cells}
    assert len(seeds) == 1 and seeds != {-1} and plan.params.subseed != -1
    var_seeds = plan.axes[1].values.values
    assert var_seeds[1] == 5 and -1 not in var_seeds and [c.params.subseed for c in plan.cells][::2] == var_seeds
    plan = plan_grid(PARAMS.updated(seed=-1), GridSpec(x="Steps: 2, 3", no_fixed_seeds=True))
    assert [c.params.seed for c in plan.cells] == [-1, -1]


def test_vary_seeds_counts_the_seed_up_along_an_axis():
    plan = plan_grid(PARAMS, GridSpec(x="Steps: 2, 3", y="CFG Scale: 5, 7, 9", vary_seeds_x=True, vary_seeds_y=True))
    assert [c.params.seed for c in plan.cells] == [11, 12, 13, 14, 15, 16]
    plan = plan_grid(PARAMS, GridSpec(x="Steps: 2, 3", y="CFG Scale: 5, 7, 9", vary_seeds_y=True))
    assert [c.params.seed for c in plan.cells] == [11, 11, 12, 12, 13, 13]


# --- running ---

def test_a_grid_writes_every_cell_with_its_own_infotext_and_the_grid_beside_them(engine, tmp_path):
    out = tmp_path / "out"
    result = engine.grid(PARAMS.updated(seed=-1), x="Steps: 2, 3", y={"axis": "CFG Scale", "values": [5, 9]},
                         out_dir=out)
    cells = [cell.images[0] for cell in result.cells]
    assert [c.path.parent for c in cells] == [out] * 4
    seed = cells[0].seed
    assert {c.seed for c in cells} == {seed}
    for cell, (steps, cfg) in zip(cells, [(2, 5), (3, 5), (2, 9), (3, 9)]):
        text = Image.open(cell.path).info["parameters"]
        assert text == cell.infotext and f"Steps: {steps}," in text and f"CFG scale: {cfg}," in text
        assert "Script:" not in text
    assert result.grid.path == out / f"xyz_grid-0000-{seed}.png"
    written = Image.open(result.grid.path)
    assert written.info["parameters"] == result.grid.infotext
    assert result.grid.infotext == cells[0].infotext.replace(
        ", Version:", ', Script: X/Y/Z plot, X Type: Steps, X Values: "2, 3", Y Type: CFG Scale, '
        'Y Values: "5,9", Version:')
    assert written.size == result.grid.image.size and written.width > 128 and written.height > 128
    assert sorted(p.name for p in out.glob("*.png")) == [
        *(f"0000{i}-{seed}.png" for i in range(4)), f"xyz_grid-0000-{seed}.png"]
    # A second grid numbers on.
    again = engine.grid(PARAMS, x="Nothing", out_dir=out, draw_legend=False)
    assert again.grid.path == out / "xyz_grid-0001-11.png" and again.grid.image.size == (64, 64)
    assert "X Type" not in again.grid.infotext and "Script: X/Y/Z plot" in again.grid.infotext


def test_sub_grids_lone_images_and_fixed_seed_values(engine, tmp_path):
    out = tmp_path / "out"
    result = engine.grid(PARAMS, x="Seed: -1, 3", z="Steps: 2, 3", include_sub_grids=True, include_lone_images=True,
                         out_dir=out)
    fixed = result.plan.axes[0].values.values
    assert fixed[1] == 3 and fixed[0] != -1
    assert f'X Type: Seed, X Values: "-1, 3", Fixed X Values: "{fixed[0]}, 3", Z Type: Steps' in result.grid.infotext
    assert [g.path.name.split("-")[1] for g in (result.grid, *result.sub_grids)] == ["0000", "0001", "0002"]
    assert "Z Type" not in result.sub_grids[1].infotext and "Steps: 3," in result.sub_grids[1].infotext
    assert len(result.images) == 1 + 2 + 4 and result.images[3] is result.cells[0].images[0]


def test_checkpoints_are_the_outer_loop_and_each_loads_once(engine, tmp_path, monkeypatch):
    models = engine.workspace.folders("checkpoints")[0]
    models.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(demo_model_path(), models / f"{name}.safetensors")
    loaded = []
    load = loader.load_model_uncached
    monkeypatch.setattr(loader, "load_model_uncached", lambda source, *a, **k: loaded.append(source) or load(source, *a, **k))
    result = engine.grid(PARAMS, x="Checkpoint name: a, b", y="Steps: 2, 3", save=False)
    assert [str(p).rsplit("/", 1)[-1] for p in loaded] == ["a.safetensors", "b.safetensors"]
    assert ["Model: a," in c.images[0].infotext for c in result.cells] == [True, False, True, False]
    assert result.plan.axes[0].values.labels == ["a", "b"]


def test_an_interrupt_keeps_the_finished_cells_and_writes_a_partial_grid(engine, tmp_path):
    out, cancel, seen = tmp_path / "out", Cancel(threading.Event(), threading.Event()), []

    def on_progress(event):
        seen.append((event.cell, event.generation.step if event.generation else None))
        if event.cell == 2 and event.generation is not None:
            cancel.interrupt.set()  # during the second cell's first step

    with pytest.raises(Interrupted, match=r"grid interrupted after 1 of 3 cells; the partial grid is .*xyz_grid-0000") \
            as caught:
        run_grid(engine, PARAMS, GridSpec(x="Steps: 2, 3, 2", draw_legend=False), progress=on_progress,
                 cancel=cancel, out_dir=out)
    result = caught.value.result
    assert result.interrupted and [len(c.images) for c in result.cells] == [1, 0, 0]
    assert seen[:3] == [(1, None), (1, 1), (1, 2)] and (3, None) not in seen
    grid = Image.open(result.grid.path)
    assert grid.size == (192, 64) and "Script: X/Y/Z plot" in grid.info["parameters"]
    assert np.asarray(grid)[:, 64:].max() == 0  # the cells not made are black
    assert sorted(p.name for p in out.glob("0*.png")) == [result.cells[0].images[0].path.name]


def test_a_refused_cell_stops_the_grid_before_any_cell_runs(engine, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PolicyViolation, match=re.escape("grid cell (X Prompt S/R = 'nude', Y Prompt S/R = 'child')")):
        engine.grid(PARAMS.updated(prompt="1girl, adult, smile"), x="Prompt S/R: smile, nude",
                    y="Prompt S/R: adult, child", out_dir=out)
    assert not out.exists()
    assert not engine.models._items  # nothing was loaded


def test_a_cell_refused_once_its_wildcards_are_expanded_stops_the_grid_before_any_cell_runs(engine, tmp_path):
    wildcards = engine.workspace.folders("wildcards")[0]
    wildcards.mkdir(parents=True)
    (wildcards / "age.txt").write_text("child\n")
    out = tmp_path / "out"
    with pytest.raises(PolicyViolation, match=re.escape("grid cell (X Prompt S/R = 'nude')")):
        engine.grid(PARAMS.updated(prompt="1girl, __age__, smile"), x="Prompt S/R: smile, nude", out_dir=out)
    assert not out.exists()

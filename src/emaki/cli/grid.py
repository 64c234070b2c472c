"""`emaki grid`: A1111's X/Y/Z plot — one image per combination of the axes' values, and the
grid of them with legends, written next to the images."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emaki.cli import app, cli_workspace, use_compile_cache
from emaki.cli.generate import (
    INPAINTING_OPTIONS,
    OPTION_FIELDS,
    OTHER_OPTIONS,
    _models_named_by_the_image,
    params_from_options,
)
from emaki.errors import EmakiError, ParamsError
from emaki.workspace import Workspace

if TYPE_CHECKING:
    from emaki.engine import Cancel
    from emaki.xyz.run import GridProgress, GridResult

console = Console(emoji=False)

def generate_options(args: list[str], parent: typer.Context | None = None) -> dict[str, Any]:
    """`args` parsed as `emaki generate` parses them (its options, its help, its errors)."""
    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    given = command.make_context("grid", list(args), parent=parent).params
    unknown = sorted(name for name, value in given.items() if value is not None and value is not False
                     and value != () and name not in (*OPTION_FIELDS, *INPAINTING_OPTIONS, *OTHER_OPTIONS))
    if unknown:
        raise ParamsError(f"emaki grid does not take --{unknown[0].replace('_', '-')} yet")
    return given


@contextmanager
def interrupt_on_ctrl_c(cancel: Cancel) -> Iterator[None]:
    """The first Ctrl+C interrupts the grid between model blocks (the finished cells and a
    partial grid are written); a second one stops at once."""
    def first(signum: int, frame: object) -> None:
        cancel.interrupt.set()
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)

    try:
        previous = signal.signal(signal.SIGINT, first)
    except ValueError:  # not the main thread (an embedding program): Ctrl+C stays its own
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def print_paths(result: GridResult, lone_images: bool) -> None:
    for image in [result.grid, *result.sub_grids]:
        if image.path is not None:
            print(image.path)
    if lone_images:
        for cell in result.cells:
            for made in cell.images:
                print(made.path)


def print_axes(workspace: Workspace) -> None:
    """One line per axis: its name, its kind, and for a closed set the names it takes here."""
    from emaki.xyz.listing import axis_rows

    for row in axis_rows(workspace):
        aliases = f" (also {', '.join(row['aliases'])})" if row["aliases"] else ""
        mode = f" [{row['mode']} only]" if row["mode"] != "both" else ""
        choices = f": {', '.join(row['choices']) or '(none here)'}" if "choices" in row else ""
        print(f"{row['name']}{aliases} — {row['kind']}{mode}{choices}")


@app.command("grid", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             options_metavar="PROMPT --x 'AXIS: VALUES' [--y ...] [--z ...] [OPTIONS] [GENERATE OPTIONS]")
def grid_command(
    ctx: typer.Context,
    x: Annotated[str | None, typer.Option("--x", help='X axis and its values: "Sampler: Euler a, DPM++ 2M Karras", "Steps: 10-30 (+10)", "CFG Scale: 5-9 [3]", "Prompt S/R: red, blue"; CSV quoting for values with commas.')] = None,
    y: Annotated[str | None, typer.Option("--y", help='Y axis, as --x (rows).')] = None,
    z: Annotated[str | None, typer.Option("--z", help='Z axis, as --x: one sub-grid per value, side by side (e.g. "Checkpoint name: a, b").')] = None,
    no_legend: Annotated[bool, typer.Option("--no-legend", help="No column/row headers or sub-grid titles.")] = False,
    sub_grids: Annotated[bool, typer.Option("--sub-grids", help="Also write each Z value's X/Y grid on its own.")] = False,
    lone_images: Annotated[bool, typer.Option("--lone-images/--no-lone-images", help="Also print each cell's image (every cell is written either way).")] = False,
    margin: Annotated[int, typer.Option("--margin", help="Pixels between the cells (0-500).")] = 0,
    no_fixed_seeds: Annotated[bool, typer.Option("--no-fixed-seeds", help="Keep seed -1: each cell draws its own seed (default: one seed for the whole grid).")] = False,
    vary_seeds: Annotated[list[str] | None, typer.Option("--vary-seeds", help="x, y or z (repeatable): the seed counts up along that axis.")] = None,
    max_size_mp: Annotated[int, typer.Option("--max-size-mp", help="Refuse grids larger than this many megapixels.")] = 200,
    list_axes: Annotated[bool, typer.Option("--list-axes", help="List the axes (name, value kind, the choices of a closed set such as samplers, checkpoints, VAEs, styles) and exit.")] = False,
) -> None:
    """An X/Y/Z plot: one image per combination of the --x, --y and --z values, and the grid of
    them with legends. Every `emaki generate` option applies to every cell (--negative, --model,
    --steps, --seed, --size, --hires, ...). Each cell is a normal image with its own parameters;
    the grid PNG (xyz_grid-NNNN-SEED.png, holding the grid's parameters) is written next to them
    and its path printed. Ctrl+C stops after writing the grid of the cells finished."""
    from emaki.xyz.spec import AxisSpec, GridSpec

    given = generate_options(ctx.args, ctx)
    if list_axes:
        print_axes(cli_workspace(Path(given["a1111"]) if given.get("a1111") else None))
        return
    axes = {name: AxisSpec.parse(text, option=f"--{name}") if text is not None else None
            for name, text in (("x", x), ("y", y), ("z", z))}
    varied = {axis.strip().lower() for axis in vary_seeds or []}
    if varied - {"x", "y", "z"}:
        raise ParamsError(f"--vary-seeds: expected x, y or z, got {min(varied - {'x', 'y', 'z'})!r}")
    spec = GridSpec.create(**axes, draw_legend=not no_legend, include_sub_grids=sub_grids,
                           include_lone_images=lone_images, no_fixed_seeds=no_fixed_seeds, margin_size=margin,
                           max_size_mp=max_size_mp, **{f"vary_seeds_{axis}": True for axis in varied})
    a1111 = Path(given["a1111"]) if given.get("a1111") else None
    workspace = cli_workspace(a1111, embeddings=[Path(p) for p in given.get("embeddings_dir") or ()],
                              hypernetworks=[Path(p) for p in given.get("hypernetworks_dir") or ()])
    params = params_from_options(given, workspace)
    from_image = given.get("from_image")
    if from_image is not None:
        params = _models_named_by_the_image(params, Path(from_image), workspace, given.get("model") is None,
                                            given.get("vae") is None)
    from emaki.devices import DevicePolicy  # torch: imported by the commands that run a model only

    policy = DevicePolicy.choose(given.get("precision"), threads=given.get("threads"), vae_tiling=given.get("vae_tiling"),
                                 compile=bool(given.get("compile")))
    if policy.compile:
        use_compile_cache(workspace)
    # The engine pulls in diffusers (seconds, ~200 MB): only the commands that run it import it.
    from emaki.engine import Cancel, Engine
    from emaki.xyz.run import run_grid

    engine = Engine(workspace, policy)
    cancel = Cancel()
    out = Path(given["out"]) if given.get("out") else None
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar, interrupt_on_ctrl_c(cancel):
        task = bar.add_task("loading model", total=None)

        def on_progress(event: GridProgress) -> None:
            where = ", ".join(label for label in event.labels if label)
            step = event.generation
            bar.update(task, description=f"cell {event.cell}/{event.cells} {where}".strip(),
                       total=step.steps if step else None, completed=step.step if step else 0)

        try:
            # Every value, name and cell's prompt is checked before the first cell runs.
            result = run_grid(engine, params, spec, progress=on_progress, cancel=cancel, out_dir=out)
        except EmakiError as e:
            partial: GridResult | None = getattr(e, "result", None)
            if partial is not None:
                print_paths(partial, lone_images)
            raise
    print_paths(result, lone_images)

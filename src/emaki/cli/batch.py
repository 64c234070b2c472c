"""`emaki batch`: a JSON Lines file of generation parameters, run as one resumable batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from emaki.cli import app, cli_workspace
from emaki.errors import ParamsError

if TYPE_CHECKING:
    from emaki.batch.run import BatchExecutor, BatchReport
    from emaki.batch.spec import BatchItem
    from emaki.batch.summary import Row

EXECUTORS = ("local", "ray")
console = Console(stderr=True, emoji=False)


class ItemsPerSecond(ProgressColumn):
    """The bar's rate: items finished per second (rich's estimate over the last 30 s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} items/s" if speed else "- items/s", style="progress.data.speed")


@app.command("batch")
def batch_command(
    prompts: Annotated[Path, typer.Argument(help="A JSON Lines file: one object of generation parameters a line "
                                                 '(the API\'s field names: {"prompt": "1girl", "seed": 5, ...}).')],
    out: Annotated[Path, typer.Option("--out", help="Folder for the images and summary.csv; rerun with the same "
                                                    "folder to resume (done items are skipped).")],
    executor: Annotated[str, typer.Option("--executor", help="local (this process) or ray (a Ray cluster; "
                                                             "pip install 'emaki\\[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="The Ray cluster to use (auto: the one "
                                                                          "`ray start` runs here; default: start one on this machine).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Ray: worker slots, one engine each (default: "
                                                                  "the cluster's GPUs, else its CPUs / --threads).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads per engine (default: local, the idle "
                                                                  "cores; ray, 1).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (default: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on a GPU, else fp32), fp32, bf16, fp16.", envvar="EMAKI_PRECISION")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install whose models are used too "
                                                               "(local executor; same as EMAKI_A1111).")] = None,
) -> None:
    """Generate every line of a JSON Lines file once: resumable, one PNG (with its infotext) per image,
    named by the line's content key, and a summary.csv."""
    from emaki.batch.run import BatchIncomplete
    from emaki.batch.spec import read_batch

    if executor not in EXECUTORS:
        raise ParamsError(f"--executor: expected local or ray, got {executor!r}")
    items = read_batch(prompts)  # every line validated and judged before anything loads
    runner = _executor(executor, ray_address, workers, threads, precision, a1111)
    try:
        report = _run_with_bar(items, out, runner)
    finally:
        runner.close()
    counts = report.counts
    summary = out / "summary.csv"
    typer.echo(f"{counts['done']} done, {counts['skipped']} already done, {counts['duplicate']} duplicate, "
               f"{counts['failed']} failed: {summary}")
    if counts["failed"]:
        raise BatchIncomplete(f"{counts['failed']} of {len(items)} items failed; {summary} says why")


def _executor(kind: str, ray_address: str | None, workers: int | None, threads: int | None,
              precision: str | None, a1111: Path | None) -> BatchExecutor:
    if kind == "ray":
        # The workers choose their device (a GPU node: fp16 is fine there): only the names are checked here.
        if precision not in (None, "auto", "fp32", "bf16", "fp16"):
            raise ParamsError(f"--precision: expected auto, fp32, bf16 or fp16, got {precision!r}")
        for option, value in (("--threads", threads), ("--workers", workers)):
            if value is not None and value < 1:
                raise ParamsError(f"{option}: expected 1 or more, got {value}")
        # Ray is imported only here: without --executor ray nothing of it loads.
        from emaki.jobs.ray_executor import RayExecutor

        return RayExecutor.connect(ray_address, workers=workers, threads=threads or 1, precision=precision)
    from emaki.batch.run import LocalBatchExecutor
    from emaki.devices import DevicePolicy
    from emaki.engine import Engine
    from emaki.jobs.rendered import EngineSlot

    policy = DevicePolicy.choose(precision, threads=threads)  # a bad --precision/--threads fails here
    return LocalBatchExecutor(EngineSlot(Engine(cli_workspace(a1111), policy)))


def _run_with_bar(items: list[BatchItem], out: Path, runner: BatchExecutor) -> BatchReport:
    from emaki.batch.run import run_batch

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  ItemsPerSecond(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("batch", total=None)

        def on_plan(to_run: int, already: int) -> None:
            bar.update(task, total=to_run, description=f"batch ({already} already done)" if already else "batch")

        def on_row(row: Row) -> None:
            bar.advance(task)
            if row.status == "failed":
                bar.console.print(f"line {row.line}: failed: {row.error}", highlight=False, soft_wrap=True)

        try:
            return run_batch(items, out, runner, on_plan=on_plan, on_row=on_row)
        except KeyboardInterrupt:
            bar.stop()
            console.print(f"stopped; {out / 'summary.csv'} lists what was done; run again to go on")
            raise typer.Exit(130) from None

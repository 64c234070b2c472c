"""`emaki lora extract`: a kohya-format LoRA approximating the difference of two checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from emaki.cli import app

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

lora_app = typer.Typer(
    name="lora", help="LoRA tools: extract a LoRA from two checkpoints.", no_args_is_help=True
)
app.add_typer(lora_app)


@lora_app.command("extract")
def extract_command(
    tuned: Annotated[Path, typer.Argument(help="The fine-tuned (or LoRA-baked) checkpoint.")],
    base: Annotated[Path, typer.Argument(help="The checkpoint it was made from.")],
    rank: Annotated[int, typer.Option("--rank", "-r", help="LoRA rank (dim); alpha = rank.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The output .safetensors.")],
    conv_rank: Annotated[
        int | None,
        typer.Option(
            "--conv-rank",
            help="Rank of the ResNet blocks' 3x3 convolutions (LoCon; default: --rank; 0 leaves "
            "the ResNet blocks out, as kohya without --conv_dim).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Where the SVDs run: cpu, cuda, cuda:1, ...")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for the SVDs.")] = 1,
    dtype: Annotated[str, typer.Option(help="Store the LoRA as fp16, bf16 or fp32.")] = "fp16",
    clamp_quantile: Annotated[
        float | None,
        typer.Option(
            "--clamp-quantile",
            help="Clip up/down to this quantile of their values (kohya: 0.99; default: off).",
            show_default=False,
        ),
    ] = None,
    min_diff: Annotated[
        float,
        typer.Option(
            "--min-diff",
            help="Leave the text encoder out when none of its weights differs by more than "
            "this (kohya's --min_diff).",
        ),
    ] = 0.01,
    name: Annotated[
        str | None, typer.Option(help="ss_output_name (default: the output's file name).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Extract the kohya LoRA closest to TUNED − BASE (a truncated SVD per layer).

    Layers are read one at a time; the relative error ‖ΔW − ΔW_r‖/‖ΔW‖ of each merge block is
    printed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from emaki.merge.blocks import ALL_BLOCKS, block_of
    from emaki.merge.by_name import run_extraction

    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[layer]}"),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("extracting", total=None, layer="")

            def update(done: int, total: int, key: str) -> None:
                bar.update(task, completed=done, total=total, layer=block_of(key) or "")

            extraction = run_extraction(
                tuned, base, out, rank=rank, conv_rank=conv_rank, device=device, threads=threads,
                dtype=dtype, clamp_quantile=clamp_quantile, min_diff=min_diff, name=name,
                overwrite=overwrite, progress=update)
    except KeyboardInterrupt:
        from emaki.errors import Interrupted

        raise Interrupted(f"{out}: extraction interrupted; nothing was written") from None
    extracted, model_hash = extraction.lora, extraction.model_hash
    errors = extracted.relative_errors(block_of)
    console.print("block   layers  relative error ‖ΔW − ΔW_r‖/‖ΔW‖", highlight=False)
    counts: dict[str, int] = {}
    for layer in extracted.layers:
        block = block_of(layer.key)
        if block is not None:
            counts[block] = counts.get(block, 0) + 1
    for block in ALL_BLOCKS:
        if block in errors:
            console.print(f"{block:7} {counts[block]:6}  {_percent(errors[block])}", highlight=False)
    console.print(f"{'all':7} {len(extracted.layers):6}  {_percent(extracted.relative_error)}",
                  highlight=False)
    if extracted.text_encoder_dropped:
        err_console.print(f"text encoder left out: no weight differs by more than {min_diff} "
                          "(--min-diff)", highlight=False)
    if extracted.unchanged:
        err_console.print(f"{len(extracted.unchanged)} layers identical in both models (left out)",
                          highlight=False)
    err_console.print(f"sshs_model_hash {model_hash} (Lora hashes: {model_hash[:12]})", highlight=False)
    console.print(str(out), highlight=False, soft_wrap=True)


def _percent(value: float) -> str:
    return f"{value * 100:.3g}%"

"""`emaki merge` (with `--lora` baking), `emaki lineage` and `emaki hash`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from emaki.cli import app, cli_workspace
from emaki.errors import EmakiError

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A byte-count progress bar on stderr; yields the callback the engine calls."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def lora_refs(specs: list[str]) -> tuple[Any, ...]:
    """`--lora` values as recipe LoRAs, each NAME found as a path, a file stem or an
    `ss_output_name` alias in the workspace's LoRA folders."""
    from emaki.merge.by_name import find_loras, parse_lora

    return find_loras([parse_lora(spec) for spec in specs], cli_workspace().folders("loras"), "--lora")


@app.command("merge")
def merge_command(
    models: Annotated[
        list[Path] | None,
        typer.Argument(help="Models A B [C]: paths (.safetensors or .ckpt), or names or hashes of models in the model folders.", show_default=False),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            "-m",
            help="weighted-sum: A·(1-α)+B·α; add-difference: A+(B-C)·α; no-interpolation: A only.",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", "-a", help="α, the multiplier (default 0.3, A1111's)."),
    ] = None,
    blocks: Annotated[
        str | None,
        typer.Option(
            help="25 comma-separated UNet block weights IN00-IN11,M00,OUT00-OUT11 "
            "(replace α there)."
        ),
    ] = None,
    te_alpha: Annotated[
        float | None, typer.Option("--te-alpha", help="α for the text encoder (default: α).")
    ] = None,
    vae_alpha: Annotated[
        float | None, typer.Option("--vae-alpha", help="α for the VAE (default: α).")
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="Store weights as fp16, bf16 or fp32 (default: as the inputs)."),
    ] = None,
    vae: Annotated[
        Path | None, typer.Option("--vae", help="Bake this VAE into the result.")
    ] = None,
    discard: Annotated[
        str | None,
        typer.Option(
            help="Drop keys matching this regex (re.search); one that could backtrack for long, "
            "such as (a+)+, is refused."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name recorded in the A1111 recipe (default: A1111's).")
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            "--lora",
            help="Bake a LoRA into the result: NAME:W (TE and UNet) or NAME:TE:UNET; NAME is a "
            "path, a file stem or an ss_output_name in the LoRA folders. Repeatable.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The output .safetensors.")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Replay a recipe: a .json, or a model merged by emaki.")
    ] = None,
    save_recipe: Annotated[
        Path | None, typer.Option("--save-recipe", help="Also write the recipe as JSON here.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Merge checkpoints (and bake LoRAs) in constant memory; the recipe goes into the output's
    metadata."""
    from emaki.merge import load_recipe, merge
    from emaki.merge import save_recipe as write_recipe
    from emaki.merge.by_name import build_recipe, find_checkpoint, parse_blocks
    from emaki.merge.recipe import MergeError
    from emaki.models.hashes import HashCache

    base_dir = None
    if recipe is not None:
        given = {
            "models": models,
            "--mode": mode,
            "--alpha": alpha,
            "--blocks": blocks,
            "--te-alpha": te_alpha,
            "--vae-alpha": vae_alpha,
            "--dtype": dtype,
            "--vae": vae,
            "--discard": discard,
            "--name": name,
            "--lora": lora,
        }
        extra = [flag for flag, value in given.items() if value]
        if extra:
            raise MergeError(
                f"--recipe replays a recipe as written; drop {', '.join(extra)} "
                "(or edit the recipe)"
            )
        the_recipe = load_recipe(recipe)
        base_dir = recipe.parent
        if out is None and isinstance(the_recipe.extra.get("output"), str):
            out = Path(the_recipe.extra["output"])
    else:
        if not models:
            raise MergeError("merge: give models A B [C], or --recipe FILE")
        workspace = cli_workspace()
        hashes = HashCache(workspace.hash_cache)
        # paths, or names or hashes of models in the workspace's folders (as lineage takes them)
        paths = [find_checkpoint(m, workspace, hashes, f"models[{i}]") for i, m in enumerate(models)]
        the_recipe = build_recipe(
            paths,
            mode=mode,
            alpha=alpha,
            blocks=parse_blocks(blocks) if blocks else None,
            te_alpha=te_alpha,
            vae_alpha=vae_alpha,
            dtype=dtype,
            vae=vae,
            discard=discard,
            name=name,
            loras=lora_refs(lora or []),
        )
    if out is None:
        raise MergeError("merge: give the output file with --out OUT.safetensors")
    try:
        with progress_bar("merging") as update:
            result = merge(
                the_recipe,
                out,
                hashes=HashCache(cli_workspace().hash_cache),
                base_dir=base_dir,
                progress=update,
                overwrite=overwrite,
            )
    except KeyboardInterrupt:
        from emaki.errors import Interrupted

        raise Interrupted(f"{out}: merge interrupted; nothing was written") from None
    for label, keys in result.lora_unmatched.items():
        shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        err_console.print(
            f"lora {label}: {len(keys)} keys name no layer of this model (not baked): {shown}",
            highlight=False,
            soft_wrap=True,
        )
    for path in result.rebuilt:
        err_console.print(
            f"recomputed {path} from its recipe (file missing or changed)", highlight=False
        )
    if save_recipe is not None:
        write_recipe(result.recipe, save_recipe, output=result.path)
    err_console.print(
        f"{result.nbytes / 1e9:.2f} GB of weights in {result.seconds:.1f} s", highlight=False
    )
    console.print(str(result.path), highlight=False, soft_wrap=True)


@app.command("lineage")
def lineage_command(
    model: Annotated[
        Path, typer.Argument(help="The model to explain: a path, or a name or hash in the model folders.")
    ],
    more: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[CANDIDATES]...", help="More candidates.", show_default=False),
    ] = None,
    candidates: Annotated[
        list[Path] | None,
        typer.Option(
            "--candidates",
            "-c",
            help="Candidate parents: --candidates A B C ... (paths, or names or hashes in the "
            "model folders)",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    nonnegative: Annotated[
        bool,
        typer.Option(
            "--nonnegative",
            "--sparse",
            help="Coefficients ≥ 0; candidates not taking part get exactly 0.",
        ),
    ] = False,
) -> None:
    """Estimate, block by block, which candidates a model was merged from and in what amounts."""
    from emaki.merge.lineage_by_name import plan_lineage, run_lineage
    from emaki.models.hashes import HashCache

    names = [*(candidates or []), *(more or [])]
    if not names:
        raise EmakiError("lineage: give candidate models with --candidates A B ...")
    workspace = cli_workspace()
    planned = plan_lineage(
        workspace,
        HashCache(workspace.hash_cache),
        model,
        names,
        nonnegative=nonnegative,
        model_field="MODEL",
        candidates_field="--candidates",
    )
    with progress_bar("comparing") as update:
        result = run_lineage(planned, progress=update)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in result.summary():
            console.print(line, highlight=False, soft_wrap=True)


@app.command("hash")
def hash_command(
    files: Annotated[list[Path], typer.Argument(help="Model files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute even if cached.")] = False,
) -> None:
    """Model hashes as A1111 and Civitai show them: legacy, AutoV2, sha256, tensor data."""
    from emaki.models.hashes import HashCache

    cache = HashCache(None if no_cache else cli_workspace().hash_cache)
    results: dict[str, dict[str, Any]] = {}
    for file in files:
        if not file.is_file():
            raise EmakiError(f"{file}: no such file")
        found = cache.get(file, tensor_data=True)
        results[str(file)] = {
            "legacy": found.legacy,
            "autov2": found.autov2,
            "sha256": found.sha256,
            "tensor_data": found.tensor_data,
        }
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for path, h in results.items():
        console.print(path, highlight=False, soft_wrap=True)
        console.print(f"  legacy hash   {h['legacy']}", highlight=False)
        console.print(f"  AutoV2        {h['autov2']}", highlight=False)
        console.print(f"  sha256        {h['sha256']}", highlight=False)
        data = h["tensor_data"] or "(safetensors only)"
        console.print(f"  tensor data   {data}", highlight=False)

"""`emaki models`: the checkpoints, VAEs, embeddings and hypernetworks emaki finds, with hashes,
and the upscaler models with their architecture and scale.

Folders: `EMAKI_HOME/models` (VAEs in `models/VAE`), `EMAKI_HOME/embeddings`,
`EMAKI_HOME/hypernetworks`, `EMAKI_HOME/upscalers`, and, with `--a1111 PATH` (or `EMAKI_A1111`),
that install's `models/Stable-diffusion`, `models/VAE`, `embeddings`, `models/hypernetworks` and
`models/ESRGAN` (`RealESRGAN`, `SwinIR`, `DAT`), read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from emaki.cli import app, cli_workspace

if TYPE_CHECKING:
    from emaki.engine.inventory import Inventory

console = Console(emoji=False)


def _print(inventory: Inventory, upscalers: list[dict[str, Any]]) -> None:
    def heading(title: str, rows: list[dict[str, Any]]) -> None:
        console.print(f"[bold]{title}[/] ({len(rows)})", highlight=False, emoji=False)
        if not rows:
            console.print("  (none found)", highlight=False)

    def line(text: str) -> None:
        console.print(escape(text), highlight=False, emoji=False)

    for title, kind, files in (("Checkpoints", "checkpoint", inventory.checkpoints), ("VAEs", "vae", inventory.vaes)):
        skipped = inventory.skipped_of(kind)
        heading(title, files + skipped)
        for row in files:
            line(f"  {row['name']} [{row['hash'] or '-'}]  {row['path']}")
        for row in skipped:
            line(f"  {row['name']}  skipped: {row['reason']}  {row['path']}")
    from emaki.engine.networks import NETWORK_KINDS

    for kind in NETWORK_KINDS:
        rows = inventory.rows(kind.folder)
        heading(kind.title, rows)
        for row in rows:
            if row["status"] == "loaded":
                line(f"  {row['name']} [{row['hash']}]  {kind.summary(row)}  {row['path']}")
            else:
                line(f"  {row['name']}  skipped: {row['reason']}  {row['path']}")
    heading("Upscalers", upscalers)
    for row in upscalers:
        if row["status"] == "loaded":
            line(f"  {row['name']}  {row['architecture']}  {row['scale']}x  {row['path']}")
        else:
            line(f"  {row['name']}  skipped: {row['reason']}  {row['path']}")


@app.command("models")
def models_command(
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to list too (default: EMAKI_A1111).")] = None,
    text_width: Annotated[int | None, typer.Option(
        "--text-width", help="List embeddings of this token width only, others as skipped (768: SD 1.x; "
                             "default: any width, each shown with its own).")] = None,
    no_hashes: Annotated[bool, typer.Option("--no-hashes", help="Skip hashing checkpoints and VAEs (slow the first time).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the checkpoints, VAEs, embeddings (loaded or skipped, and why), hypernetworks and
    upscaler models found."""
    # heavy (torch): imported by the command only, so `emaki --help` starts at once
    from emaki.engine.inventory import take_inventory
    from emaki.upscalers.listing import upscaler_rows

    workspace = cli_workspace(a1111)
    inventory = take_inventory(workspace, text_width=text_width, hashes=not no_hashes)
    upscalers = upscaler_rows(workspace)
    if as_json:
        print(json.dumps(inventory.as_json() | {"upscalers": upscalers}, ensure_ascii=False, indent=1))
    else:
        _print(inventory, upscalers)

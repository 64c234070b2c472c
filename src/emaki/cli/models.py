"""`emaki models`: the checkpoints, VAEs, embeddings and hypernetworks emaki finds, with hashes.

Folders: `EMAKI_HOME/models` (VAEs in `models/VAE`), `EMAKI_HOME/embeddings`,
`EMAKI_HOME/hypernetworks`, and, with `--a1111 PATH` (or `EMAKI_A1111`), that install's
`models/Stable-diffusion`, `models/VAE`, `embeddings` and `models/hypernetworks`, read-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from emaki.cli import app
from emaki.errors import EmakiError
from emaki.home import a1111_dir
from emaki.inventory import Inventory, take_inventory

console = Console()


def _print(inventory: Inventory) -> None:
    def heading(title: str, rows: list[dict[str, Any]]) -> None:
        console.print(f"[bold]{title}[/] ({len(rows)})", highlight=False)
        if not rows:
            console.print("  (none found)", highlight=False)

    heading("Checkpoints", inventory.checkpoints)
    for row in inventory.checkpoints:
        console.print(f"  {escape(row['name'])} [{row['hash'] or '-'}]  {escape(row['path'])}", highlight=False)
    heading("VAEs", inventory.vaes)
    for row in inventory.vaes:
        console.print(f"  {escape(row['name'])} [{row['hash'] or '-'}]  {escape(row['path'])}", highlight=False)
    heading("Embeddings", inventory.embeddings)
    for row in inventory.embeddings:
        if row["status"] == "loaded":
            console.print(f"  {escape(row['name'])} [{row['hash']}]  {row['vectors']} vectors × {row['width']}"
                          f"{'' if row['step'] is None else ', step ' + str(row['step'])}  {escape(row['path'])}",
                          highlight=False)
        else:
            console.print(f"  {escape(row['name'])}  skipped: {escape(row['reason'])}  {escape(row['path'])}",
                          highlight=False)
    heading("Hypernetworks", inventory.hypernetworks)
    for row in inventory.hypernetworks:
        if row["status"] == "loaded":
            console.print(f"  {escape(row['name'])} [{row['hash']}]  sizes {row['sizes']}, structure "
                          f"{row['layer_structure']}, activation {row['activation']}  {escape(row['path'])}",
                          highlight=False)
        else:
            console.print(f"  {escape(row['name'])}  skipped: {escape(row['reason'])}", highlight=False)


@app.command("models")
def models_command(
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to list too (default: EMAKI_A1111).")] = None,
    text_width: Annotated[int, typer.Option("--text-width", help="Token-embedding width embeddings must have (768 for SD 1.x).")] = 768,
    no_hashes: Annotated[bool, typer.Option("--no-hashes", help="Skip hashing checkpoints and VAEs (slow the first time).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the checkpoints, VAEs, embeddings (loaded or skipped, and why) and hypernetworks found."""
    root = a1111 if a1111 is not None else a1111_dir()
    if root is not None and not root.is_dir():
        raise EmakiError(f"--a1111 {root}: no such folder")
    inventory = take_inventory(root, text_width=text_width, hashes=not no_hashes)
    if as_json:
        print(json.dumps(inventory.__dict__, ensure_ascii=False, indent=1))
    else:
        _print(inventory)

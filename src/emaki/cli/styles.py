"""`emaki styles list|add|remove`: the prompt styles of A1111's `styles.csv` format, kept in
the workspace's `styles.csv` (an A1111 install's, with --a1111, is listed and used, never written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from emaki.cli import app, cli_workspace
from emaki.errors import ParamsError

console = Console(emoji=False)

styles_app = typer.Typer(name="styles", help="Prompt styles (A1111's styles.csv): list, add, remove.",
                         no_args_is_help=True)
app.add_typer(styles_app)

A1111_OPTION = typer.Option("--a1111", help="An A1111 install whose styles.csv is read too (read-only; same as "
                            "EMAKI_A1111).")


@styles_app.command("list")
def list_command(
    a1111: Annotated[Path | None, A1111_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the styles as JSON.")] = False,
) -> None:
    """List the styles: name, prompt, negative prompt and the file each comes from."""
    # emaki.prompts pulls in torch: imported by the command only, so `emaki --help` starts at once
    from emaki.prompts.styles import read_styles, styles_files

    styles = read_styles(styles_files(cli_workspace(a1111))).values()
    if as_json:
        rows = [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt, "path": str(s.path)}
                for s in styles]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not styles:
        console.print("no styles yet: add one with `emaki styles add NAME --prompt ...`", highlight=False)
        return
    table = Table("name", "prompt", "negative prompt", "file")
    for style in styles:
        # Text, not markup: prompts hold brackets ("[cat|dog]") that rich would read as styles.
        table.add_row(*(Text(cell) for cell in (style.name, style.prompt, style.negative_prompt, str(style.path))))
    console.print(table, highlight=False)


@styles_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="The style's name (what --style and the API's `styles` give).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Its prompt text; {prompt} marks where the prompt "
                                        "goes, else the text is appended with ', '.")] = "",
    negative: Annotated[str, typer.Option("--negative", "-n", help="Its negative prompt text (same rule).")] = "",
) -> None:
    """Add a style to the workspace's styles.csv, or replace the one of that name there."""
    from emaki.prompts.styles import Style, read_styles, save_style

    if not prompt and not negative:
        raise ParamsError("styles add: give --prompt and/or --negative")
    path = cli_workspace().styles_file
    existed = any(style.name == name for style in read_styles([path]).values())
    save_style(path, Style(name, prompt, negative))
    print(f"{'replaced' if existed else 'added'} style {name!r} in {path}")


@styles_app.command("remove")
def remove_command(
    name: Annotated[str, typer.Argument(help="The style's name.")],
    a1111: Annotated[Path | None, A1111_OPTION] = None,
) -> None:
    """Remove a style from the workspace's styles.csv."""
    from emaki.prompts.styles import delete_style, read_styles, styles_files

    workspace = cli_workspace(a1111)
    path = workspace.styles_file
    if not any(style.name == name for style in read_styles([path]).values()):
        found = read_styles(styles_files(workspace)).get(name)
        if found is not None:
            raise ParamsError(f"styles remove: {name!r} is in {found.path}, which emaki does not write")
        raise ParamsError(f"styles remove: no style named {name!r} in {path}")
    delete_style(path, name)
    print(f"removed style {name!r} from {path}")

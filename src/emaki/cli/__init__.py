"""The `emaki` command line: translates flags into engine calls; prints errors on one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from emaki.errors import EmakiError
from emaki.workspace import Workspace, workspace_from_environment

app = typer.Typer(
    name="emaki",
    help="Anime-style image generation with Stable Diffusion 1.x checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, emoji=False)


def cli_workspace(a1111: Path | None = None, *, embeddings: list[Path] | None = None,
                  hypernetworks: list[Path] | None = None) -> Workspace:
    """The workspace of one command: `EMAKI_HOME`/`EMAKI_A1111` from the environment, the
    command's `--a1111` and folder flags over them. The one place the CLI reads the environment."""
    workspace = workspace_from_environment(os.environ, a1111=a1111)
    if embeddings:
        workspace = workspace.with_folders("embeddings", embeddings)
    if hypernetworks:
        workspace = workspace.with_folders("hypernetworks", hypernetworks)
    return workspace



def use_compile_cache(workspace: Workspace) -> None:
    """`--compile`: inductor keeps what it compiled in the workspace (EMAKI_HOME/cache/compile),
    for the next process, unless `TORCHINDUCTOR_CACHE_DIR` names a folder already; that
    variable is inductor's one documented way to choose it."""
    from emaki.engine.speed.compile import compile_cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir(workspace.home)))

def _register_commands() -> None:
    # Each module adds its commands to `app` when imported.
    from emaki.cli import (
        batch,  # noqa: F401
        generate,  # noqa: F401
        grid,  # noqa: F401
        inpaint,  # noqa: F401
        lora,  # noqa: F401
        merge,  # noqa: F401
        models,  # noqa: F401
        serve,  # noqa: F401
        styles,  # noqa: F401
        tokens,  # noqa: F401
        train,  # noqa: F401
        upscale,  # noqa: F401
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `emaki` script: `EmakiError`s become one line and their exit code."""
    _register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except EmakiError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:
        if _is_usage_error(e):  # a typo in a command or an option: the usage line, a suggestion, exit 2
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        raise


def _is_usage_error(error: Exception) -> bool:
    """click's errors, whichever copy of click raised them (typer ships its own, `typer._click`)."""
    return any(cls.__name__ == "ClickException" for cls in type(error).__mro__)

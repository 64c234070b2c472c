"""`emaki tokens "prompt"`: the token count and where the 75-token chunks break (specs §4.5)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from emaki.cli import app

console = Console(emoji=False)


@app.command("tokens")
def tokens_command(
    prompt: Annotated[
        str, typer.Argument(help="The prompt (A1111 syntax unless --prompt-dialect).")
    ],
    negative: Annotated[
        bool, typer.Option("--negative", help="Count it as a negative prompt (no AND).")
    ] = False,
    steps: Annotated[
        int, typer.Option(help="Sampling steps, for prompt editing and alternation.")
    ] = 20,
    prompt_dialect: Annotated[
        str, typer.Option("--prompt-dialect", help="a1111 or novelai.")
    ] = "a1111",
) -> None:
    """Print how many CLIP tokens PROMPT uses and the text of each 75-token chunk."""
    # heavy (torch): imported by the command only, so `emaki --help` starts at once
    from emaki.models.tokenizer import load_clip_tokenizer
    from emaki.prompts.token_counter import count_tokens

    count = count_tokens(
        prompt, load_clip_tokenizer(), steps=steps, negative=negative, dialect=prompt_dialect
    )
    console.print(count.summary(), highlight=False)
    for chunk in count.chunks:
        console.print(
            f"  chunk {chunk.index + 1} ({chunk.tokens} tokens): {escape(chunk.text)}",
            highlight=False,
            soft_wrap=True,
        )

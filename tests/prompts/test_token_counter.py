"""The token counter behind `emaki tokens` and the web page (specs §4.5)."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from emaki.cli.tokens import tokens_command
from emaki.errors import PromptError
from emaki.models.tokenizer import load_clip_tokenizer
from emaki.prompts import EmbeddingTable, count_tokens


@pytest.fixture(scope="module")
def tok():
    return load_clip_tokenizer()


def test_counts_and_limit(tok) -> None:
    count = count_tokens("1girl, smile", tok)
    assert (count.tokens, count.limit, len(count.chunks)) == (4, 75, 1)
    assert count.summary() == "4/75 tokens, 1 chunk"
    assert count_tokens("", tok).summary() == "0/75 tokens, 1 chunk"
    long = count_tokens("a " * 80, tok)
    assert (long.tokens, long.limit, [c.tokens for c in long.chunks]) == (80, 150, [75, 5])


def test_the_longest_variant_and_part_is_counted(tok) -> None:
    count = count_tokens("a AND b c d [e|f g h i]", tok)
    assert count.tokens == 7 and count.text == " b c d f g h i"
    assert count_tokens("[short:a much longer text here:5]", tok).tokens == 5


def test_network_tags_are_not_counted_and_break_is(tok) -> None:
    assert count_tokens("<hypernet:anime:0.5>a", tok).tokens == 1
    count = count_tokens("a BREAK b", tok)
    assert count.tokens == 76 and [c.text for c in count.chunks] == ["a", "b"]


def test_negative_prompts_are_not_split_on_and(tok) -> None:
    assert count_tokens("a AND b", tok, negative=True).tokens == 3


def test_novelai_dialect(tok) -> None:
    assert count_tokens("{a} (b)", tok, dialect="novelai").chunks[0].text == "a ( b )"


def test_chunk_breaks_follow_the_comma_backoff(tok) -> None:
    count = count_tokens("a " * 60 + ", " + "b " * 20, tok)
    assert [c.tokens for c in count.chunks] == [61, 20]
    assert count.chunks[0].text.endswith("a ,")


def test_embeddings_are_shown_by_name(tok) -> None:
    table = EmbeddingTable({"easynegative": torch.zeros(8, 768)}, tok)
    count = count_tokens("easynegative, cat", tok, embeddings=table)
    assert count.tokens == 10 and count.chunks[0].text == "<easynegative> , cat"


def test_unreadable_emphasis_raises(tok) -> None:
    with pytest.raises(PromptError):
        count_tokens("(a:1.2.3)", tok)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("tokens")(tokens_command)
    app.callback()(lambda: None)
    return app


def test_cli_prints_count_and_chunks() -> None:
    result = CliRunner().invoke(cli(), ["tokens", "a " * 80])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "80/150 tokens, 2 chunks"
    assert (
        lines[1].startswith("  chunk 1 (75 tokens): a a")
        and lines[2] == "  chunk 2 (5 tokens): a a a a a"
    )


def test_cli_options() -> None:
    result = CliRunner().invoke(cli(), ["tokens", "x AND y", "--negative"])
    assert result.output.splitlines()[0] == "3/75 tokens, 1 chunk"
    result = CliRunner().invoke(cli(), ["tokens", "[x|y z]", "--steps", "1"])
    assert result.output.splitlines()[0] == "1/75 tokens, 1 chunk"
    result = CliRunner().invoke(cli(), ["tokens", "[brackets]", "--prompt-dialect", "novelai"])
    assert "brackets" in result.output

"""75-token chunking (specs §4.5) and embedding placement (§3.4), on the real CLIP tokenizer."""

from __future__ import annotations

import pytest
import torch

from emaki.errors import PromptError
from emaki.models.tokenizer import BOS_ID, COMMA_ID, EOS_ID, load_clip_tokenizer
from emaki.prompts import (
    EmbeddingTable,
    chunk_prompt,
    empty_chunk,
    parse_attention,
    tokenize_chunks,
)

A, B, C = 320, 321, 322  # "a", "b", "c"
BREAK_ID = 2568  # "break</w>"


@pytest.fixture(scope="module")
def tok():
    return load_clip_tokenizer()


def chunks_of(prompt: str, tok, **kwargs):
    return chunk_prompt(parse_attention(prompt), tok, **kwargs)


def body(chunk) -> list[int]:
    """The 75 ids between BOS and the final EOS."""
    assert len(chunk.token_ids) == 77 and len(chunk.multipliers) == 77
    assert chunk.token_ids[0] == BOS_ID and chunk.token_ids[-1] == EOS_ID
    assert chunk.multipliers[0] == chunk.multipliers[-1] == 1.0
    return chunk.token_ids[1:-1]


def test_empty_prompt_is_one_chunk_of_padding(tok) -> None:
    chunks, count = chunks_of("", tok)
    assert count == 0 and len(chunks) == 1
    assert chunks[0].token_ids == [BOS_ID] + [EOS_ID] * 76
    assert chunks[0].token_ids == empty_chunk().token_ids


def test_one_word(tok) -> None:
    [chunk], count = chunks_of("a", tok)
    assert count == 1 and body(chunk) == [A] + [EOS_ID] * 74


def test_75_tokens_fit_76_do_not(tok) -> None:
    chunks, count = chunks_of("a " * 75, tok)
    assert (len(chunks), count) == (1, 75)
    chunks, count = chunks_of("a " * 76, tok)
    assert (len(chunks), count) == (2, 76)
    assert body(chunks[1]) == [A] + [EOS_ID] * 74


def test_weights_follow_their_tokens(tok) -> None:
    [chunk] = tokenize_chunks(parse_attention("a (b:1.3) [c]"), tok)
    assert chunk.token_ids[1:5] == [A, B, C, EOS_ID]
    assert chunk.multipliers[1:5] == [1.0, 1.3, 1 / 1.1, 1.0]


def test_break_closes_the_chunk(tok) -> None:
    chunks, count = chunks_of("a BREAK b", tok)
    assert [body(c)[:2] for c in chunks] == [[A, EOS_ID], [B, EOS_ID]]
    assert count == 76


def test_break_at_the_end_adds_no_chunk_but_counts_75(tok) -> None:
    chunks, count = chunks_of("a BREAK", tok)
    assert len(chunks) == 1 and count == 75


def test_break_at_the_start_gives_a_chunk_of_padding(tok) -> None:
    chunks, _ = chunks_of("BREAK a", tok)
    assert body(chunks[0]) == [EOS_ID] * 75 and body(chunks[1])[0] == A


def test_weighted_break_is_the_word_break(tok) -> None:
    [chunk], _ = chunks_of("(a BREAK b:1.2)", tok)
    assert chunk.token_ids[1:4] == [A, BREAK_ID, B]
    assert chunk.multipliers[1:4] == [1.2, -1.2, 1.2]


def test_comma_backoff_moves_the_tail_after_a_recent_comma(tok) -> None:
    chunks, count = chunks_of("a " * 60 + ", " + "b " * 20, tok)
    assert body(chunks[0]) == [A] * 60 + [COMMA_ID] + [EOS_ID] * 14
    assert body(chunks[1]) == [B] * 20 + [EOS_ID] * 55
    assert count == 95


def test_no_backoff_when_the_comma_is_more_than_20_back(tok) -> None:
    chunks, _ = chunks_of("a " * 54 + ", " + "b " * 25, tok)
    assert body(chunks[0]) == [A] * 54 + [COMMA_ID] + [B] * 20
    assert body(chunks[1])[:6] == [B] * 5 + [EOS_ID]


def test_backoff_setting(tok) -> None:
    prompt = "a " * 60 + ", " + "b " * 20
    chunks, _ = chunks_of(prompt, tok, comma_padding_backtrack=0)
    assert body(chunks[0]) == [A] * 60 + [COMMA_ID] + [B] * 14
    chunks, _ = chunks_of(prompt, tok, comma_padding_backtrack=10)
    assert body(chunks[0]) == [A] * 60 + [COMMA_ID] + [B] * 14


def test_a_comma_arriving_at_a_full_chunk_is_not_remembered(tok) -> None:
    """Quirk: the comma is noted, then the full chunk closes and forgets it."""
    chunks, _ = chunks_of("a " * 75 + ", " + "b " * 75 + "c", tok, comma_padding_backtrack=100)
    assert body(chunks[1]) == [COMMA_ID] + [B] * 74
    assert body(chunks[2])[:3] == [B, C, EOS_ID]


@pytest.fixture(scope="module")
def table(tok):
    return EmbeddingTable({"easynegative": torch.zeros(8, 768), "style-a": torch.ones(2, 768)}, tok)


def fixes(chunk) -> list[tuple[int, str, int]]:
    return [(f.offset, f.embedding.name, int(f.embedding.vectors.shape[0])) for f in chunk.fixes]


def test_embeddings_become_placeholders_with_fixes(tok, table) -> None:
    """The example of specs §3.4."""
    [chunk], count = chunks_of("(easynegative:1.2), style-a", tok, embeddings=table)
    assert fixes(chunk) == [(0, "easynegative", 8), (9, "style-a", 2)]
    assert body(chunk)[:11] == [0] * 8 + [COMMA_ID] + [0] * 2
    assert chunk.multipliers[1:12] == [1.2] * 8 + [1.0] * 3
    assert count == 11


def test_embedding_names_match_on_token_ids(tok, table) -> None:
    [chunk], _ = chunks_of("EasyNegative,", tok, embeddings=table)
    assert fixes(chunk) == [(0, "easynegative", 8)]
    [chunk], _ = chunks_of("easynegatives", tok, embeddings=table)  # BPE merges differently
    assert fixes(chunk) == []


def test_an_embedding_that_does_not_fit_starts_a_new_chunk(tok, table) -> None:
    chunks, _ = chunks_of("a " * 70 + "easynegative", tok, embeddings=table)
    assert body(chunks[0]) == [A] * 70 + [EOS_ID] * 5 and chunks[0].fixes == []
    assert fixes(chunks[1]) == [(0, "easynegative", 8)]


def test_comma_backoff_leaves_embedding_fixes_behind(tok, table) -> None:
    """Quirk of the reference: the moved tail's fix stays with the old chunk."""
    chunks, _ = chunks_of("a " * 60 + ", style-a " + "b " * 13 + "c", tok, embeddings=table)
    assert body(chunks[0]) == [A] * 60 + [COMMA_ID] + [EOS_ID] * 14
    assert fixes(chunks[0]) == [(61, "style-a", 2)]
    assert body(chunks[1])[:16] == [0, 0] + [B] * 13 + [C] and chunks[1].fixes == []


def test_an_embedding_longer_than_a_chunk_is_refused(tok) -> None:
    huge = EmbeddingTable({"huge": torch.zeros(80, 768)}, tok)
    with pytest.raises(PromptError, match="'huge' has 80 vectors"):
        tokenize_chunks([("huge", 1.0)], tok, embeddings=huge)

"""Embeddings found in folders and injected into prompt encoding (specs §3.1, §3.4)."""

from __future__ import annotations

import pytest
import torch
from test_embedding_files import LAYOUTS, expected_vectors, write_layout

from emaki.networks import Embedding, EmbeddingLibrary, save_embedding, ti_hashes
from emaki.prompts import PromptEncoder, encode_negative_prompts, encode_prompts


def capture_token_embeddings(encoder: PromptEncoder, text: str) -> torch.Tensor:
    """The token embeddings CLIP used (its embeddings output minus the position embeddings)
    for the first chunk of `text`."""
    model = getattr(encoder.text_encoder, "text_model", encoder.text_encoder)  # transformers 4 or 5
    embeddings = model.embeddings
    seen = []
    handle = embeddings.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            encoder.encode([text])
    finally:
        handle.remove()
    return seen[0][0] - embeddings.position_embedding.weight[: seen[0].shape[1]]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vectors_land_at_the_name_position_for_every_format(tmp_path, tiny_components, layout):
    write_layout(tmp_path, layout)
    scan = EmbeddingLibrary().scan([tmp_path], expected_width=32)
    assert list(scan.loaded) == ["style-a"] and not scan.skipped
    c = tiny_components
    encoder = PromptEncoder(c.text_encoder, c.tokenizer, embeddings=scan.lookup(c.tokenizer))
    rows = capture_token_embeddings(encoder, "1girl, (Style-A:1.2), smile")
    vectors = expected_vectors(layout)
    # BOS, "1girl" is 2 tokens ("1", "girl"), "," → the embedding starts at token offset 3
    torch.testing.assert_close(rows[4 : 4 + len(vectors)], vectors, rtol=0, atol=1e-6)
    plain = PromptEncoder(c.text_encoder, c.tokenizer)
    assert not torch.allclose(capture_token_embeddings(plain, "1girl, (Style-A:1.2), smile")[4], vectors[0])


def test_embedding_offset_follows_the_tokens(tiny_components):
    c = tiny_components
    ids = c.tokenizer(["1girl,"], add_special_tokens=False)["input_ids"][0]
    assert len(ids) == 3  # guards the offset used above


def test_width_mismatch_is_skipped_and_reported_never_crashes(tmp_path, tiny_components):
    save_embedding(Embedding("easynegative", torch.zeros(8, 768)), tmp_path / "easynegative.safetensors")
    save_embedding(Embedding("small", torch.ones(2, 32)), tmp_path / "small.pt")
    scan = EmbeddingLibrary().scan([tmp_path], expected_width=32)
    assert list(scan.loaded) == ["small"]
    [skipped] = scan.skipped
    assert skipped.name == "easynegative" and "768" in skipped.reason and "32" in skipped.reason
    c = tiny_components
    encoder = PromptEncoder(c.text_encoder, c.tokenizer, embeddings=scan.lookup(c.tokenizer))
    with torch.no_grad():
        assert encoder.encode(["easynegative, small"]).shape == (1, 77, 32)


def test_works_in_the_negative_prompt_and_reports_ti_hashes(tmp_path, tiny_components):
    save_embedding(Embedding("easynegative", torch.ones(2, 32)), tmp_path / "easynegative.pt")
    save_embedding(Embedding("style-a", torch.full((1, 32), 0.5)), tmp_path / "style-a.safetensors")
    scan = EmbeddingLibrary().scan([tmp_path], expected_width=32)
    c = tiny_components
    encoder = PromptEncoder(c.text_encoder, c.tokenizer, embeddings=scan.lookup(c.tokenizer))
    with torch.no_grad():
        [cond] = encode_prompts(encoder, ["1girl, style-a"], 20)
        [uncond] = encode_negative_prompts(encoder, ["EasyNegative, lowres"], 20)
    assert [e.name for e in uncond.embeddings] == ["easynegative"]
    rows = capture_token_embeddings(encoder, "EasyNegative, lowres")
    torch.testing.assert_close(rows[1:3], torch.ones(2, 32), rtol=0, atol=1e-6)
    hashes = ti_hashes([*cond.embeddings, *uncond.embeddings])
    neg, style = scan.loaded["easynegative"], scan.loaded["style-a"]
    assert hashes == f"style-a: {style.shorthash}, easynegative: {neg.shorthash}"
    assert ti_hashes([]) is None


def test_discovery_rules(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    save_embedding(Embedding("nested", torch.ones(1, 32)), tmp_path / "sub" / "deeper" / "nested.pt")
    save_embedding(Embedding("ignored", torch.ones(1, 32)), tmp_path / "thing.preview.png")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an embedding")
    (tmp_path / "broken.pt").write_bytes(b"not a pickle at all")
    save_embedding(Embedding("card-name", torch.ones(1, 32)), tmp_path / "file-name.png")
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "nested.png")  # a preview picture
    other = tmp_path / "other"
    other.mkdir()
    save_embedding(Embedding("nested", torch.zeros(1, 32)), other / "nested.safetensors")
    scan = EmbeddingLibrary().scan([tmp_path / "sub", tmp_path, other], expected_width=32)
    assert sorted(scan.loaded) == ["card-name", "nested"]
    assert torch.equal(scan.loaded["nested"].vectors, torch.ones(1, 32))  # first folder wins
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert set(reasons) == {"broken.pt", "nested.safetensors"}
    assert "unreadable" in reasons["broken.pt"] and "duplicate" in reasons["nested.safetensors"]


def test_library_rereads_only_changed_files(tmp_path):
    path = save_embedding(Embedding("a", torch.ones(1, 32)), tmp_path / "a.pt")
    library = EmbeddingLibrary()
    first = library.scan([tmp_path]).loaded["a"]
    assert library.scan([tmp_path]).loaded["a"] is first
    save_embedding(Embedding("a", torch.zeros(2, 32)), path)
    import os

    os.utime(path, ns=(0, 1))
    assert library.scan([tmp_path]).loaded["a"].num_vectors == 2

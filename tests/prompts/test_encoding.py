"""Prompt → conditioning on a tiny random CLIP text encoder (specs §4.3-4.7)."""

from __future__ import annotations

import pytest
import torch

from emaki.errors import ParamsError
from emaki.models.components import SDComponents
from emaki.models.tokenizer import BOS_ID, EOS_ID
from emaki.prompts import (
    ComposableConditioning,
    EmbeddingTable,
    PromptEncoder,
    ScheduledConditioning,
    encode_negative_prompts,
    encode_prompts,
)


@pytest.fixture(scope="module")
def encoder(tiny_components: SDComponents) -> PromptEncoder:
    return PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer)


def clip(components: SDComponents, ids: list[int]) -> torch.Tensor:
    """Plain CLIP on one 77-token row, no emphasis: (77, dim)."""
    with torch.no_grad():
        return components.text_encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]


def row(tokenizer, text: str) -> list[int]:
    ids = tokenizer([text], add_special_tokens=False)["input_ids"][0]
    return [BOS_ID, *ids] + [EOS_ID] * (76 - len(ids))


def test_editing_switches_after_step_10(encoder: PromptEncoder, tiny_components) -> None:
    [cond] = encode_prompts(encoder, ["a photo of [cat:dog:10]"], 20)
    [(sched, weight)] = cond.parts
    assert weight == 1.0
    assert [end for end, _ in sched.entries] == [10, 20]
    cat = clip(tiny_components, row(tiny_components.tokenizer, "a photo of cat"))
    dog = clip(tiny_components, row(tiny_components.tokenizer, "a photo of dog"))
    for step in range(11):  # `from` is used for when+1 denoiser calls (0..10)
        torch.testing.assert_close(sched.at(step), cat)
    for step in range(11, 20):
        torch.testing.assert_close(sched.at(step), dog)
    assert not torch.allclose(cat, dog)
    assert sched.text_at(10) == "a photo of cat" and sched.text_at(11) == "a photo of dog"


def test_past_the_last_boundary_the_first_entry_is_used(encoder: PromptEncoder) -> None:
    [sched] = encode_negative_prompts(encoder, ["[cat:dog:5]"], 10)
    assert torch.equal(sched.at(11), sched.at(0))  # A1111 reconstruct_cond_batch quirk


def test_alternation_alternates_every_step(encoder: PromptEncoder) -> None:
    [sched] = encode_negative_prompts(encoder, ["[cat|dog] ears"], 6)
    assert len(sched.entries) == 6
    assert torch.equal(sched.at(0), sched.at(1))  # step 0 uses entry 1, as A1111
    assert torch.equal(sched.at(1), sched.at(3))
    assert not torch.equal(sched.at(1), sched.at(2))


def emphasis_pair(components, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc = PromptEncoder(components.text_encoder, components.tokenizer, emphasis=mode)
    [weighted] = encode_negative_prompts(enc, ["a (cat:1.5) sitting"], 20)
    [plain] = encode_negative_prompts(enc, ["a cat sitting"], 20)
    return weighted.at(0), plain.at(0)


def test_emphasis_no_norm_scales_exactly_the_weighted_token(tiny_components) -> None:
    weighted, plain = emphasis_pair(tiny_components, "No norm")
    torch.testing.assert_close(weighted[2], plain[2] * 1.5)  # BOS, "a", "cat"
    others = [i for i in range(77) if i != 2]
    torch.testing.assert_close(weighted[others], plain[others])


def test_emphasis_original_restores_the_mean(tiny_components) -> None:
    weighted, plain = emphasis_pair(tiny_components, "Original")
    scaled = plain.clone()
    scaled[2] *= 1.5
    expected = scaled * (plain.mean() / scaled.mean())
    torch.testing.assert_close(weighted, expected)
    torch.testing.assert_close(weighted.mean(), plain.mean())


def test_emphasis_ignore_drops_weights_and_none_keeps_brackets(tiny_components) -> None:
    weighted, plain = emphasis_pair(tiny_components, "Ignore")
    torch.testing.assert_close(weighted, plain)
    enc = PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer, emphasis="None")
    [literal] = encode_negative_prompts(enc, ["a (cat:1.5) sitting"], 20)
    expected = clip(tiny_components, row(tiny_components.tokenizer, "a (cat:1.5) sitting"))
    torch.testing.assert_close(literal.at(0), expected)


def test_mean_restore_couples_the_scheduled_variants(tiny_components) -> None:
    """The mean is over all variants of one prompt encoded together (specs §4.6)."""
    enc = PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer)
    [sched] = encode_negative_prompts(enc, ["[(cat:1.5):dog:3]"], 10)
    cat = clip(tiny_components, row(tiny_components.tokenizer, "cat"))
    dog = clip(tiny_components, row(tiny_components.tokenizer, "dog"))
    both = torch.stack([cat, dog])
    mean0 = both.mean()
    both[0, 1] *= 1.5
    both = both * (mean0 / both.mean())
    torch.testing.assert_close(sched.at(0), both[0])
    torch.testing.assert_close(sched.at(5), both[1])


def test_clip_skip_is_final_layer_norm_of_an_earlier_layer(tiny_components) -> None:
    enc = PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer, clip_skip=2)
    [sched] = encode_negative_prompts(enc, ["1girl, smile"], 20)
    te = tiny_components.text_encoder
    with torch.no_grad():
        out = te(
            input_ids=torch.tensor([row(tiny_components.tokenizer, "1girl, smile")]),
            output_hidden_states=True,
        )
        expected = te.final_layer_norm(out.hidden_states[-2])[0]
    torch.testing.assert_close(sched.at(0), expected)
    assert not torch.allclose(sched.at(0), out.last_hidden_state[0])
    too_deep = PromptEncoder(te, tiny_components.tokenizer, clip_skip=9)
    with pytest.raises(ParamsError, match="clip_skip 9"):
        encode_negative_prompts(too_deep, ["x"], 20)


def test_long_prompts_make_several_chunks_and_and_parts_stack(encoder: PromptEncoder) -> None:
    long = ", ".join(["red hair"] * 40)  # 119 tokens → 2 chunks
    [cond] = encode_prompts(encoder, [f"cat AND {long}:0.5 AND cat"], 20)
    assert isinstance(cond, ComposableConditioning)
    weights = [w for _, w in cond.parts]
    assert weights == [1.0, 0.5, 1.0]
    assert cond.parts[0][0] is not cond.parts[2][0]  # "cat" vs " cat": different texts
    shapes = [s.at(0).shape[0] for s, _ in cond.parts]
    assert shapes == [77, 154, 77]
    stacked, ws = cond.at(0)
    assert stacked.shape == (3, 154, 32) and ws == weights
    torch.testing.assert_close(stacked[0, 77:], cond.parts[0][0].at(0)[-1:].expand(77, -1))


def test_identical_prompts_share_their_conditioning(encoder: PromptEncoder) -> None:
    conds = encode_prompts(encoder, ["cat AND dog", "dog AND cat", "cat AND dog"], 20)
    assert conds[0].parts[0][0] is conds[2].parts[0][0]
    negs = encode_negative_prompts(encoder, ["bad", "bad"], 20)
    assert isinstance(negs[0], ScheduledConditioning) and negs[0] is negs[1]


def test_novelai_dialect_is_converted_before_encoding(encoder: PromptEncoder) -> None:
    [nai] = encode_negative_prompts(encoder, ["{cat}"], 20, dialect="novelai")
    [a11] = encode_negative_prompts(encoder, ["(cat:1.05)"], 20)
    torch.testing.assert_close(nai.at(0), a11.at(0))
    with pytest.raises(ParamsError, match="dialect"):
        encode_negative_prompts(encoder, ["x"], 20, dialect="comfy")


def test_embedding_vectors_replace_the_placeholder_rows(tiny_components) -> None:
    tok = tiny_components.tokenizer
    vec = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    table = EmbeddingTable({"easynegative": vec}, tok)
    enc = PromptEncoder(tiny_components.text_encoder, tok, embeddings=table, emphasis="No norm")
    [sched] = encode_negative_prompts(enc, ["a EasyNegative, cat"], 20)
    te = tiny_components.text_encoder
    a, comma_cat = row(tok, "a")[1:2], row(tok, ", cat")[1:3]
    ids = [BOS_ID, *a, 0, 0, 0, *comma_cat] + [EOS_ID] * 70  # 0 = the placeholder id
    with torch.no_grad():
        embeds = te.embeddings.token_embedding(torch.tensor([ids]))
        embeds[0, 2:5] = vec
        hook = te.embeddings.token_embedding.register_forward_hook(lambda m, i, o: embeds)
        try:
            expected = te(input_ids=torch.tensor([ids])).last_hidden_state[0]
        finally:
            hook.remove()
    torch.testing.assert_close(sched.at(0), expected)
    assert [e.name for e in sched.embeddings] == ["easynegative"]
    [cond] = encode_prompts(enc, ["cat AND [x:easynegative:3]"], 20)
    assert [e.name for e in cond.embeddings] == ["easynegative"]
    assert (
        encode_prompts(encoder_without_table(tiny_components), ["easynegative"], 20)[0].embeddings
        == []
    )


def encoder_without_table(components) -> PromptEncoder:
    return PromptEncoder(components.text_encoder, components.tokenizer)


def test_output_follows_the_text_encoder_dtype(tiny_components) -> None:
    te = tiny_components.text_encoder
    te16 = type(te)(te.config).to(torch.bfloat16).eval()
    te16.load_state_dict(te.state_dict())
    enc = PromptEncoder(te16, tiny_components.tokenizer)
    [cond] = encode_prompts(enc, ["(cat:1.3)"], 20)
    assert cond.parts[0][0].at(0).dtype == torch.bfloat16


def test_bad_settings_are_refused(tiny_components) -> None:
    with pytest.raises(ParamsError, match="emphasis"):
        PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer, emphasis="Strong")
    with pytest.raises(ParamsError, match="clip_skip"):
        PromptEncoder(tiny_components.text_encoder, tiny_components.tokenizer, clip_skip=0)


def test_prompt_editing_that_would_make_gigabytes_of_conditioning_is_refused(encoder: PromptEncoder) -> None:
    long_text = ", ".join(["masterpiece"] * 1100)  # 30 chunks of 75 tokens, in 71 edited texts
    edits = " ".join(f"[cat{i}:dog{i}:{i}]" for i in range(1, 71))
    with pytest.raises(ParamsError, match="prompt editing makes"):
        encode_prompts(encoder, [f"{long_text} {edits}"], 1000)
    assert encode_prompts(encoder, [f"{long_text} [cat:dog:5]"], 20)  # ordinary editing is untouched

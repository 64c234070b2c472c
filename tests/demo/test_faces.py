"""The procedural faces and their evaluator (no model needed)."""

from __future__ import annotations

import random

import pytest

from emaki.demo import caption, describe, draw_face, random_attributes, sample_face
from emaki.demo.faces import (
    BACKGROUNDS,
    EYE_COLORS,
    HAIR_COLORS,
    FaceAttributes,
    all_attributes,
)

FIELDS = ("hair_color", "hair_length", "eye_color", "expression", "background", "accessory",
          "cat_ears", "style")


def test_sample_face_is_deterministic() -> None:
    a_img, a_cap, a_attrs = sample_face(123)
    b_img, b_cap, b_attrs = sample_face(123)
    assert a_img.tobytes() == b_img.tobytes()
    assert (a_cap, a_attrs) == (b_cap, b_attrs)
    assert sample_face(124)[1] != a_cap or sample_face(124)[0].tobytes() != a_img.tobytes()


def test_caption_is_danbooru_style_in_random_order() -> None:
    attrs = FaceAttributes("red", "long hair", "blue", "smile", "white")
    orders = {caption(attrs, random.Random(s)) for s in range(20)}
    assert len(orders) > 5
    for text in orders:
        tags = text.split(", ")
        assert tags[:2] == ["1girl", "solo"]
        assert sorted(tags[2:]) == sorted(["long hair", "red hair", "blue eyes", "smile", "white background"])


def test_enough_attribute_values() -> None:
    assert len(HAIR_COLORS) >= 8 and len(EYE_COLORS) >= 5 and len(BACKGROUNDS) >= 4
    assert len(all_attributes()) == 8 * 3 * 6 * 4 * 5 * 4


def test_held_out_concepts_never_in_training_distribution() -> None:
    rng = random.Random(0)
    for _ in range(500):
        attrs = random_attributes(rng)
        assert not attrs.cat_ears and attrs.style == "default"
        assert "cat ears" not in caption(attrs) and "sepia" not in caption(attrs)
    assert not any(a.cat_ears or a.style != "default" for a in all_attributes())
    held = [random_attributes(rng, held_out=True) for _ in range(200)]
    assert any(a.cat_ears for a in held) and any(a.style == "sepia" for a in held)
    assert "cat ears" in caption(FaceAttributes("red", "short hair", "blue", "smile", "white", cat_ears=True))


@pytest.mark.parametrize("held_out", [False, True])
def test_describe_reads_back_the_generators_own_faces(held_out: bool) -> None:
    """>= 99% per attribute; on sepia faces only style and cat ears are promised."""
    n, wrong = 400, {f: 0 for f in FIELDS}
    counted = {f: 0 for f in FIELDS}
    for seed in range(n):
        image, _, attrs = sample_face(10_000 + seed, held_out=held_out)
        got, want = describe(image), attrs.to_dict()
        if attrs.expression == "closed eyes":
            want["eye_color"] = None
        for f in FIELDS:
            if attrs.style == "sepia" and f not in ("style", "cat_ears"):
                continue
            counted[f] += 1
            wrong[f] += got[f] != want[f]
    for f in FIELDS:
        assert wrong[f] <= 0.01 * counted[f], (f, wrong[f], counted[f])


def test_describe_accepts_arrays_and_other_sizes() -> None:
    import numpy as np

    attrs = FaceAttributes("green", "twintails", "purple", "open mouth", "yellow", "hat")
    image = draw_face(attrs)
    assert describe(np.asarray(image))["hair_color"] == "green"
    assert describe(np.asarray(image).transpose(2, 0, 1))["eye_color"] == "purple"
    big = draw_face(attrs, size=128)
    assert big.size == (128, 128)
    assert describe(big)["hair_length"] == "twintails"

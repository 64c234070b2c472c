"""Training sets are judged caption by caption, before the run starts."""

from __future__ import annotations

import pytest

from emaki.errors import PolicyViolation
from emaki.safety import check_training_captions


def test_clean_captions_pass() -> None:
    check_training_captions([])
    check_training_captions([
        ("data/001.txt", "1girl, solo, long hair, school uniform"),
        ("data/002.txt", "1girl, nsfw, mature female, nude"),
        ("templates/style.txt", "a painting of [name], [filewords]"),
        ("data/003.txt", "child playing in the park"),
    ])


def test_every_offending_source_is_named() -> None:
    items = [
        ("data/001.txt", "1girl, smile"),
        ("data/002.txt", "loli, nude"),
        ("data/003.txt", "1girl, nsfw"),
        ("data/004.txt", "12歳, 全裸"),
        ("data/005.txt", "lolicon"),
    ]
    with pytest.raises(PolicyViolation) as caught:
        check_training_captions(iter(items))
    message = str(caught.value)
    assert "3 sources" in message
    for source in ("data/002.txt", "data/004.txt", "data/005.txt"):
        assert source in message
    for source in ("data/001.txt", "data/003.txt"):
        assert source not in message
    assert '"loli"' in message and '"nude"' in message
    assert caught.value.exit_code == 3


def test_the_network_name_is_part_of_every_caption() -> None:
    captions = [("data/001.txt", "nsfw, nude, bed"), ("template.txt", "a photo of [name]")]
    check_training_captions(captions, network_name="myStyle")
    with pytest.raises(PolicyViolation, match="data/001.txt"):
        check_training_captions(captions, network_name="loliBody")

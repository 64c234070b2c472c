"""The SD 1.x CLIP tokenizer, built from the vocabulary files shipped inside the package."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from transformers import CLIPTokenizer

BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267


@lru_cache(maxsize=1)
def load_clip_tokenizer() -> CLIPTokenizer:
    """The tokenizer of `openai/clip-vit-large-patch14`, offline.

    transformers 5 builds a broken tokenizer from `vocab_file=`/`merges_file=` keywords
    (specs/ENVIRONMENT.md), so the paths go in as `vocab=`/`merges=`.

    >>> load_clip_tokenizer()("a photo of a cat").input_ids
    [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    folder = resources.files("emaki") / "data" / "clip-tokenizer"
    with resources.as_file(folder) as path:
        return CLIPTokenizer(
            vocab=str(path / "vocab.json"),
            merges=str(path / "merges.txt"),
            model_max_length=77,
        )


def tokenizable(text: str) -> str:
    """`text` with lone UTF-16 surrogates (from JSON `\\ud800` escapes or undecodable file
    names) replaced by U+FFFD: the tokenizer refuses them with a TypeError.

    >>> tokenizable("a\\ud800b") == "a\\ufffdb", tokenizable("猫 😺")
    (True, '猫 😺')
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

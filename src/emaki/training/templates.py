"""Prompt templates for textual-inversion and hypernetwork training (A1111's
`textual_inversion_templates`): one prompt per line, `[name]` for the trained token and
`[filewords]` for the image's caption.

The A1111 set ships as is: `none`, `style`, `style_filewords`, `subject`,
`subject_filewords` and `hypernetwork`. emaki adds `tags` (`[name]`), `tags_filewords`
(`[name], [filewords]`) and `filewords` (the caption alone: a hypernetwork has no word of its
own in the prompt) for anime models fine-tuned on booru tags (NAI and its descendants):
they never saw captions such as "a photo of a ..." or "art by ...", so those words only add
noise to what the embedding learns; a bare tag list is the language the model was trained in.
In a line that is only `[name]` and `[filewords]` as tags, the name takes a random place among
the caption's tags (after kohya's `keep_tokens`), as a user's prompt may put it anywhere
(`CaptionMaker`).

>>> read_template("tags_filewords")
['[name], [filewords]']
>>> len(read_template("style.txt"))
19
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from emaki.errors import ParamsError

TEMPLATE_NAMES = (
    "none",
    "style",
    "style_filewords",
    "subject",
    "subject_filewords",
    "hypernetwork",
    "tags",
    "tags_filewords",
    "filewords",
)
_FOLDER = "textual_inversion_templates"


def read_template(name_or_path: str) -> list[str]:
    """The non-empty, stripped lines of a shipped template (`style`, `style.txt`) or of a
    template file; a shipped name wins over a file of the same name in the working folder."""
    name = name_or_path.strip()
    stem = name.removesuffix(".txt")
    if stem in TEMPLATE_NAMES:
        source = f"template {stem!r}"
        text = resources.files("emaki.data").joinpath(f"{_FOLDER}/{stem}.txt").read_text("utf-8")
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ParamsError(
                f"template {name_or_path!r}: neither a shipped template ({', '.join(TEMPLATE_NAMES)}) "
                "nor a text file")
        source = f"template file {path}"
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ParamsError(f"{source}: cannot be read as UTF-8 text ({e})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParamsError(f"{source}: has no lines (expected one prompt per line, "
                          "with [name] and/or [filewords])")
    return lines

"""Prompt styles as A1111 v1.10 keeps them (`modules/styles.py`): CSV files of
`name,prompt,negative_prompt` rows, applied to a prompt by name, and found again in a prompt
read back from an infotext (A1111's `extract_styles_from_prompt`).

A style's text holding `{prompt}` is the prompt's frame (the placeholder replaced by the
prompt); any other text is appended with ", ":

>>> merge_style("masterpiece, {prompt}, detailed", "1girl")
'masterpiece, 1girl, detailed'
>>> merge_style(" anime style ", "1girl, red hair ")
'1girl, red hair, anime style'
>>> merge_style("anime style", "")
'anime style'

Several files are read (the workspace's `styles.csv`, then an A1111 install's); a name
found in more than one file is the first file's. Only the workspace's file is ever written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emaki.errors import ParamsError
from emaki.files import atomic_write

if TYPE_CHECKING:
    from emaki.workspace import Workspace

PLACEHOLDER = "{prompt}"
HEADER = ("name", "prompt", "negative_prompt")
# A styles file is a few KB to a few MB (shared collections hold thousands of styles).
MAX_STYLES_FILE_BYTES = 32 * 1024 * 1024
MAX_STYLE_NAME = 256
ENCODING = "utf-8-sig"  # A1111 writes a BOM, and reads files with or without one


@dataclass(frozen=True)
class Style:
    """One row of a styles file; `path` is the file it was read from (None: not saved yet)."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    path: Path | None = None


def styles_files(workspace: Workspace) -> list[Path]:
    """The styles files of a workspace, in the order their names win: its own `styles.csv`,
    then the A1111 install's (read-only)."""
    files = [workspace.styles_file]
    if workspace.a1111 is not None:
        files.append(workspace.a1111 / "styles.csv")
    return files


# --- reading ---

def read_styles(paths: Iterable[Path]) -> dict[str, Style]:
    """Every style of the files that exist among `paths`, by name (the first file's wins), in
    file order."""
    found: dict[str, Style] = {}
    for path in paths:
        for style in read_styles_file(path):
            found.setdefault(style.name, style)
    return found


def read_styles_file(path: Path) -> list[Style]:
    """The styles of one file (none when it does not exist); a later row of a name replaces an
    earlier one, as in A1111. A malformed file raises `ParamsError` naming the file and line."""
    by_name: dict[str, Style] = {}
    for _, row in _rows(path):
        if _is_comment(row):
            continue
        name, prompt, negative = row
        by_name.pop(name, None)
        by_name[name] = Style(name, prompt, negative, path)
    return list(by_name.values())


def _is_comment(row: tuple[str, ...]) -> bool:
    return row[0].startswith("#")  # A1111 skips rows whose name starts with "#"


def _rows(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, (name, prompt, negative prompt)) of every row but the header; comment rows as
    they are. The header names the columns (A1111's `csv.DictReader`): `name,prompt,negative_prompt`,
    or the old `name,text`; missing cells are empty."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        columns = _columns(path, header)
        rows = []
        for cells in reader:
            if not any(cells):  # an empty line
                continue
            if cells[0].startswith("#"):
                rows.append((reader.line_num, tuple(cells)))
                continue
            if len(cells) > len(header):
                raise ParamsError(f"{path}, line {reader.line_num}: {len(cells)} fields where the header has "
                                  f"{len(header)} (quote a field that holds a comma)")
            cells += [""] * (len(header) - len(cells))
            row = tuple(cells[i] if i is not None else "" for i in columns)
            rows.append((reader.line_num, (row[0], row[1], row[2])))
        return rows
    except csv.Error as e:
        raise ParamsError(f"{path}, line {reader.line_num}: not a valid CSV row ({e})") from None


def _read_text(path: Path) -> str:
    try:
        if not path.is_file():
            return ""
        if path.stat().st_size > MAX_STYLES_FILE_BYTES:
            raise ParamsError(f"{path}: a styles file of more than {MAX_STYLES_FILE_BYTES // 2**20} MB")
        return path.read_text(encoding=ENCODING)
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read the styles file ({e.strerror or e})") from None


def _columns(path: Path, header: list[str]) -> tuple[int, int | None, int | None]:
    """Where name, prompt and negative prompt are in a row, from the header."""
    names = [cell.strip() for cell in header]
    prompt = "prompt" if "prompt" in names else "text"
    if "name" not in names or prompt not in names:
        raise ParamsError(f"{path}, line 1: expected the header row {','.join(HEADER)}, got {','.join(header)!r}")
    negative = names.index("negative_prompt") if "negative_prompt" in names else None
    return names.index("name"), names.index(prompt), negative


# --- applying ---

def merge_style(style_text: str, prompt: str) -> str:
    """One style's text over a prompt (A1111's `merge_prompts`; examples in the module's docstring)."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def find_styles(names: Sequence[str], styles: Mapping[str, Style]) -> list[Style]:
    """The styles `names` name, in that order; an unknown name raises `ParamsError` listing
    the styles there are."""
    missing = [name for name in names if name not in styles]
    if missing:
        known = ", ".join(f'"{name}"' for name in list(styles)[:50]) or "none (no styles file)"
        more = f" and {len(styles) - 50} more" if len(styles) > 50 else ""
        raise ParamsError(f"styles: no style named {', '.join(repr(m) for m in missing)}; the styles are {known}{more}")
    return [styles[name] for name in names]


def apply_styles(prompt: str, negative_prompt: str, names: Sequence[str],
                 styles: Mapping[str, Style]) -> tuple[str, str]:
    """The prompt and negative prompt with the named styles applied one after the other, as
    A1111 applies the styles chosen in its UI (or the API's `styles`).

    >>> styles = {"frame": Style("frame", "masterpiece, {prompt}", "lowres"), "tag": Style("tag", "anime")}
    >>> apply_styles("1girl", "", ["frame", "tag"], styles)
    ('masterpiece, 1girl, anime', 'lowres')
    """
    for style in find_styles(names, styles):
        prompt = merge_style(style.prompt, prompt)
        negative_prompt = merge_style(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


# --- extracting (reading an infotext back) ---

def unstyled_text(style_text: str, prompt: str) -> str | None:
    """The prompt without one style's text (A1111's `extract_style_text_from_prompt`), or None
    when the style is not in it. Both are compared stripped; a `{prompt}` style must frame the
    prompt, any other must end it (", " before it is dropped too).

    >>> unstyled_text("masterpiece, {prompt}", " masterpiece, 1girl, smile ")
    '1girl, smile'
    >>> unstyled_text("anime style", "1girl, anime style")
    '1girl'
    >>> unstyled_text("masterpiece, {prompt}", "best, 1girl") is None
    True
    """
    text, style = prompt.strip(), style_text.strip()
    if PLACEHOLDER in style:
        parts = style.split(PLACEHOLDER)
        if len(parts) != 2:  # the frame cannot be undone (A1111 fails on these too)
            return None
        left, right = parts
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left):len(text) - len(right)]
        return None
    if not text.endswith(style):
        return None
    rest = text[:len(text) - len(style)]
    return rest.removesuffix(", ")


def extract_styles(prompt: str, negative_prompt: str, styles: Iterable[Style]) -> tuple[list[str], str, str]:
    """(names, prompt, negative prompt): the styles found in a styled prompt and negative
    prompt, taken back out (A1111's `extract_styles_from_prompt`): the first style (in file order)
    found in both is taken out, then the search starts again among the others; the names come
    last found first (applying them in that order makes the prompt again).

    >>> styles = [Style("frame", "masterpiece, {prompt}", "lowres"), Style("tag", "anime")]
    >>> extract_styles("masterpiece, 1girl, anime", "lowres", styles)
    (['tag', 'frame'], '1girl', '')
    >>> apply_styles("1girl", "", ['tag', 'frame'], {style.name: style for style in styles})
    ('masterpiece, 1girl, anime', 'lowres')
    """
    left = [style for style in styles if style.prompt or style.negative_prompt]
    found: list[str] = []
    while True:
        for style in left:
            positive = unstyled_text(style.prompt, prompt)
            negative = unstyled_text(style.negative_prompt, negative_prompt) if positive is not None else None
            if positive is not None and negative is not None:
                prompt, negative_prompt = positive, negative
                found.append(style.name)
                left.remove(style)
                break
        else:
            return found[::-1], prompt, negative_prompt


# --- writing (the workspace's own file) ---

def check_style_name(name: str) -> str:
    """A name a style can be saved under: read back the same, and not a comment row."""
    if not name.strip():
        raise ParamsError("style name: must not be empty")
    if len(name) > MAX_STYLE_NAME:
        raise ParamsError(f"style name: at most {MAX_STYLE_NAME} characters, got {len(name)}")
    if name != name.strip() or any(ch in name for ch in "\r\n\0"):
        raise ParamsError(f"style name {name!r}: no leading or trailing spaces, no line breaks")
    if name.startswith("#"):
        raise ParamsError(f"style name {name!r}: must not start with # (A1111 reads such rows as comments)")
    return name


def save_style(path: Path, style: Style) -> Style:
    """Add `style` to the styles file at `path`, or replace the style of that name in place;
    the file is rewritten atomically (comment rows kept). Returns the style as saved."""
    check_style_name(style.name)
    rows = [row for _, row in _rows(path)]
    new = (style.name, style.prompt, style.negative_prompt)
    at = [i for i, row in enumerate(rows) if row[0] == style.name and not _is_comment(row)]
    if at:
        rows[at[0]] = new
        rows = [row for i, row in enumerate(rows) if i not in at[1:]]
    else:
        rows.append(new)
    _write_rows(path, rows)
    return Style(style.name, style.prompt, style.negative_prompt, path)


def delete_style(path: Path, name: str) -> None:
    """Remove the style `name` from the styles file at `path` (atomically); `ParamsError` when
    the file has no such style."""
    rows = [row for _, row in _rows(path)]
    kept = [row for row in rows if row[0] != name or _is_comment(row)]
    if len(kept) == len(rows):
        raise ParamsError(f"{path}: no style named {name!r}")
    _write_rows(path, kept)


def _write_rows(path: Path, rows: Sequence[tuple[str, ...]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # csv's own line ends, as A1111's DictWriter writes
    writer.writerow(HEADER)
    writer.writerows(rows)
    with atomic_write(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding=ENCODING, newline="")

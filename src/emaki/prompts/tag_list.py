"""Prompt tags for the page's autocomplete, in the a1111-sd-webui-tagcomplete CSV format:
`tag,category,count[,"alias1,alias2"]` (danbooru's categories: 0 general, 1 artist,
3 copyright, 4 character, 5 meta).

emaki ships a small list of common danbooru tags; every `*.csv` in the workspace's `tags`
folders is added after it (a tag already listed keeps its first row). The files are user data:
a file over `MAX_FILE_BYTES` is skipped, a row that does not parse is skipped, and at most
`MAX_TAGS` tags are read in all.

>>> rows = parse_tag_rows(['long_hair,0,100,"longhair,long-hair"', 'bad,row', 'smile,0,90'])
>>> [(t.tag, t.count, t.aliases) for t in rows]
[('long_hair', 100, ('longhair', 'long-hair')), ('smile', 90, ())]
>>> [t.tag for t in search_tags(rows, "Long h")]
['long_hair']
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from emaki.workspace import Workspace

DEFAULT_TAGS = Path(__file__).resolve().parent.parent / "data" / "tags" / "danbooru.csv"
MAX_FILE_BYTES = 32 * 1024 * 1024  # tagcomplete's full danbooru.csv is a few MB
MAX_TAGS = 500_000
MAX_TAG_LENGTH = 200
MAX_ALIASES = 32
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptTag:
    """One row of a tag list."""

    tag: str
    category: int
    count: int
    aliases: tuple[str, ...] = ()


def parse_tag_rows(lines: Iterable[str], limit: int = MAX_TAGS) -> list[PromptTag]:
    """The rows that parse (a tag, an integer category and count, optional aliases)."""
    tags: list[PromptTag] = []
    for row in csv.reader(lines):
        if len(tags) >= limit:
            break
        tag = parse_tag_row(row)
        if tag is not None:
            tags.append(tag)
    return tags


def parse_tag_row(row: Sequence[str]) -> PromptTag | None:
    if len(row) < 3:
        return None
    tag = row[0].strip()
    if not tag or len(tag) > MAX_TAG_LENGTH or tag.startswith("#"):
        return None
    try:
        category, count = int(row[1]), int(row[2])
    except ValueError:
        return None
    aliases = tuple(a.strip() for a in row[3].split(",") if a.strip())[:MAX_ALIASES] if len(row) > 3 else ()
    return PromptTag(tag, category, count, tuple(a for a in aliases if len(a) <= MAX_TAG_LENGTH))


def tag_files(workspace: Workspace) -> list[Path]:
    """The shipped list, then the workspace's `*.csv` files (each folder's sorted by name)."""
    found = [DEFAULT_TAGS]
    for folder in workspace.folders("tags"):
        if folder.is_dir():
            found += sorted(p for p in folder.glob("*.csv") if p.is_file())
    return found


def load_tags(workspace: Workspace) -> tuple[PromptTag, ...]:
    """Every tag of the workspace's lists; read again only when a file changed."""
    signature = []
    for path in tag_files(workspace):
        try:
            stat = path.stat()
        except OSError:
            continue
        signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return _load(tuple(signature))


@lru_cache(maxsize=4)
def _load(signature: tuple[tuple[str, int, int], ...]) -> tuple[PromptTag, ...]:
    seen: set[str] = set()
    tags: list[PromptTag] = []
    for name, _mtime, size in signature:
        if size > MAX_FILE_BYTES and name != str(DEFAULT_TAGS):  # the shipped list is ours, not user data
            log.warning("%s: skipped, a tag list of %d bytes (at most %d)", name, size, MAX_FILE_BYTES)
            continue
        try:
            with open(name, encoding="utf-8", errors="replace", newline="") as file:
                rows = parse_tag_rows(file, MAX_TAGS - len(tags))
        except OSError as e:
            log.warning("%s: skipped, cannot be read (%s)", name, e)
            continue
        for tag in rows:
            if tag.tag not in seen:
                seen.add(tag.tag)
                tags.append(tag)
    return tuple(tags)


def search_tags(tags: Sequence[PromptTag], query: str, limit: int = 20) -> list[PromptTag]:
    """Tags whose name or an alias starts with `query` (any case; a space matches an
    underscore, as users type them), most used first; an empty query: the most used."""
    key = query.strip().lower().replace(" ", "_")
    if key:
        hits = [t for t in tags if t.tag.lower().startswith(key) or any(a.lower().startswith(key) for a in t.aliases)]
    else:
        hits = list(tags)
    return sorted(hits, key=lambda t: -t.count)[:limit]

r"""Wildcards and variants, the template language sd-dynamic-prompts users share (its
random mode): a template becomes one prompt per image, chosen by a seeded RNG.

- `__name__` is one line of `name.txt` in a wildcard folder (`__dir/name__`: `dir/name.txt`;
  `__colours*__`: a line of any file the pattern matches). Lines are stripped; empty lines and
  lines starting with `#` are skipped. A line may hold wildcards and variants itself.
- `{a|b|c}` is one of its options; `{2$$a|b|c}` two of them (no repeats) joined with ", ",
  `{1-2$$ and $$a|b|c}` one or two joined with " and "; `{0.5::a|b}` weighs the options;
  `{2$$__name__}` picks two lines of the file. A brace group with neither `|` nor `$$` is left
  as it is (NovelAI's `{emphasis}`); `[a|b]` (A1111's alternation) is no variant.

>>> import random
>>> expand_prompt("1girl, {red|blue} hair, {2$$ and $$smile|wink|blush}", random.Random(3), WildcardFiles(()))
'1girl, red hair, wink and smile'
>>> expand_prompt(r"{masterpiece}, [cat|dog], \{a|b\}", random.Random(3), WildcardFiles(()))
'{masterpiece}, [cat|dog], \\{a|b\\}'

Only files inside the wildcard folders are read: names with `..`, backslashes or a leading
`/` are refused, and so is a file that resolves (through a link) outside its folder.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emaki.errors import ParamsError
from emaki.params import MAX_PROMPT_LENGTH  # an expanded prompt is a prompt

SUFFIX = ".txt"
MAX_NESTING = 20  # wildcards within wildcards (and variants within variants), as deep as this
MAX_CHOICES = 10_000  # choices made for one prompt: a few wildcards fanning out cannot run away
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_GLOB_FILES = 10_000

_WILDCARD = re.compile(r"__([^\s_][^\s]*?)__")
_NAME = re.compile(r"[\w\-./*]+")
_QUANTITY = re.compile(r"\s*(?P<low>\d*)\s*(?:(?P<dash>-)\s*(?P<high>\d*))?\s*\$\$(?P<rest>.*)", re.DOTALL)
_WEIGHT = re.compile(r"\s*(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*::(?P<option>.*)", re.DOTALL)
_OPENING = {"(": ")", "[": "]", "{": "}"}


@dataclass
class WildcardFiles:
    """The wildcard folders (the first that holds a name wins) and the lines read from them,
    kept for one run (files are read once however many images use them)."""

    folders: Sequence[Path]
    _lines: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lines(self, name: str) -> tuple[str, ...]:
        if name not in self._lines:
            files = self._glob(name) if "*" in name else [self._find(name)]
            lines = tuple(line for path in files for line in _read_lines(path))
            if not lines:
                raise ParamsError(f"wildcard __{name}__: {', '.join(map(str, files))} holds no lines")
            self._lines[name] = lines
        return self._lines[name]

    def _find(self, name: str) -> Path:
        _check_name(name)
        for folder in self.folders:
            path = _inside(folder, folder / f"{name}{SUFFIX}", name)
            if path is not None:
                return path
        raise ParamsError(f"wildcard __{name}__: no file {name}{SUFFIX} in the wildcard folders "
                          f"({', '.join(map(str, self.folders)) or 'none'})")

    def _glob(self, pattern: str) -> list[Path]:
        _check_name(pattern)
        found: dict[str, Path] = {}  # by name: the first folder's file wins, as for one name
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for count, path in enumerate(sorted(folder.rglob(f"*{SUFFIX}"))):
                if count >= MAX_GLOB_FILES:
                    raise ParamsError(f"wildcard __{pattern}__: more than {MAX_GLOB_FILES} files in {folder}")
                name = path.relative_to(folder).as_posix()[:-len(SUFFIX)]
                if name not in found and fnmatch.fnmatchcase(name, pattern):
                    inside = _inside(folder, path, name)
                    if inside is not None:
                        found[name] = inside
        if not found:
            raise ParamsError(f"wildcard __{pattern}__: no file matches it in the wildcard folders "
                              f"({', '.join(map(str, self.folders)) or 'none'})")
        return [found[name] for name in sorted(found)]


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not _NAME.fullmatch(name) or any(part.strip() in ("", ".", "..") for part in parts):
        raise ParamsError(f"wildcard __{name}__: a name is made of folder and file names below a wildcard folder "
                          "(letters, digits, - _ . and /; no '..', no leading '/')")


def _inside(folder: Path, path: Path, name: str) -> Path | None:
    """`path` resolved, when it is a file; refused when it resolves outside `folder`."""
    try:
        resolved = path.resolve(strict=True)
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a link loop
        return None
    if not resolved.is_relative_to(root):
        raise ParamsError(f"wildcard __{name}__: {path} leads outside the wildcard folder {folder}")
    return resolved if resolved.is_file() else None


def _read_lines(path: Path) -> list[str]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ParamsError(f"{path}: a wildcard file of more than {MAX_FILE_BYTES // 2**20} MB")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read the wildcard file ({e.strerror or e})") from None
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


# --- the template language ---

def is_template(text: str) -> bool:
    """Whether `text` holds a wildcard or a variant (a prompt that differs image to image).

    >>> is_template("1girl, __hair__"), is_template("{a|b}"), is_template("{masterpiece}, [a|b]")
    (True, True, False)
    """
    return any(kind != "text" for kind, _, _ in _pieces(text))


def expand_prompt(template: str, rng: random.Random, files: WildcardFiles) -> str:
    """One prompt from `template`: every wildcard and variant resolved with `rng` (the same
    seed gives the same prompt), depth first, left to right."""
    return _Expansion(rng, files).expand(template, ())


@dataclass
class _Expansion:
    rng: random.Random
    files: WildcardFiles
    choices: int = 0

    def expand(self, text: str, chain: tuple[str, ...]) -> str:
        out: list[str] = []
        length = 0
        for kind, value, _ in _pieces(text):
            if kind == "wildcard":
                value = self.wildcard(value, chain)
            elif kind == "variant":
                value = self.variant(value, chain)
            out.append(value)
            length += len(value)
            if length > MAX_PROMPT_LENGTH:
                raise ParamsError(f"prompt: the wildcards and variants make a prompt of more than {MAX_PROMPT_LENGTH:,} "
                                  "characters")
        return "".join(out)

    def count(self, chain: tuple[str, ...]) -> None:
        self.choices += 1
        if self.choices > MAX_CHOICES:
            raise ParamsError(f"prompt: the wildcards and variants make more than {MAX_CHOICES:,} choices")
        if len(chain) >= MAX_NESTING:
            raise ParamsError(f"prompt: wildcards and variants nested more than {MAX_NESTING} deep: "
                              f"{' → '.join(chain)}")

    def wildcard(self, name: str, chain: tuple[str, ...]) -> str:
        here = f"__{name}__"
        if here in chain:
            cycle = chain[chain.index(here):]
            raise ParamsError(f"wildcard {here} refers back to itself: {' → '.join((*cycle, here))}")
        self.count(chain)
        lines = self.files.lines(name)
        return self.expand(lines[self.rng.randrange(len(lines))], (*chain, here))

    def variant(self, body: str, chain: tuple[str, ...]) -> str:
        self.count(chain)
        low, high, separator, rest = _quantity(body)
        options = _split_options(rest)
        whole_file = _WILDCARD.fullmatch(options[0].strip()) if len(options) == 1 else None
        if whole_file:  # {2$$__name__}: lines of the file
            options = list(self.files.lines(whole_file.group(1)))
        weighted = [_weighted(option) for option in options]
        high = len(weighted) if high is None else min(high, len(weighted))
        low = min(low, high)
        count = low if low == high else low + self.rng.randrange(high - low + 1)
        chosen = _draw(weighted, count, self.rng)
        return separator.join(self.expand(option, (*chain, "{...}")) for option in chosen)


def _pieces(text: str) -> list[tuple[str, str, int]]:
    """`text` cut into ("text" | "wildcard" | "variant", value, start): a wildcard's value is
    its name, a variant's the text between its braces. Backslash escapes stay text."""
    pieces: list[tuple[str, str, int]] = []
    plain_from = i = 0

    def cut(kind: str, value: str, start: int, end: int) -> None:
        nonlocal plain_from
        if plain_from < start:
            pieces.append(("text", text[plain_from:start], plain_from))
        pieces.append((kind, value, start))
        plain_from = end

    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "_" and text.startswith("__", i):
            match = _WILDCARD.match(text, i)
            if match:
                cut("wildcard", match.group(1), i, match.end())
                i = match.end()
                continue
        if char == "{":
            end = _closing(text, i)
            if end is not None and _is_variant(text[i + 1:end]):
                cut("variant", text[i + 1:end], i, end + 1)
                i = end + 1
                continue
        i += 1
    if plain_from < len(text):
        pieces.append(("text", text[plain_from:], plain_from))
    return pieces


def _closing(text: str, start: int) -> int | None:
    """The index of the bracket that closes the one at `start`, or None when it is unclosed.
    Brackets of the three kinds nest; a stray closing one of another kind is text."""
    stack = [_OPENING[text[start]]]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char in _OPENING:
            stack.append(_OPENING[char])
        elif char == stack[-1]:
            stack.pop()
            if not stack:
                return i
        i += 1
    return None


def _split_options(body: str) -> list[str]:
    """`body` split at the `|`s outside nested brackets."""
    options, depth, start, i = [], 0, 0, 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 2
            continue
        if char in _OPENING:
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char == "|" and not depth:
            options.append(body[start:i])
            start = i + 1
        i += 1
    options.append(body[start:])
    return options


def _is_variant(body: str) -> bool:
    return len(_split_options(body)) > 1 or _QUANTITY.match(body) is not None


def _quantity(body: str) -> tuple[int, int | None, str, str]:
    """(fewest, most (None: all), separator, options) of a variant's body: `N$$`, `N-M$$`,
    `-M$$`, `N-$$`, each optionally followed by `separator$$`."""
    match = _QUANTITY.match(body)
    if match is None:
        return 1, 1, ", ", body
    low = int(match["low"]) if match["low"] else 1
    high: int | None = low
    if match["dash"]:
        high = int(match["high"]) if match["high"] else None
    rest, separator = match["rest"], ", "
    if "$$" in rest:
        separator, rest = rest.split("$$", 1)
    return low, high, separator, rest


def _weighted(option: str) -> tuple[float, str]:
    match = _WEIGHT.match(option)
    if match is None:
        return 1.0, option.strip()
    return float(match["weight"]), match["option"].strip()


def _draw(options: list[tuple[float, str]], count: int, rng: random.Random) -> list[str]:
    """`count` options drawn without repeats, each in proportion to its weight."""
    left = list(options)
    chosen = []
    for _ in range(count):
        total = sum(weight for weight, _ in left)
        if total <= 0:
            index = rng.randrange(len(left))
        else:
            point, index = rng.random() * total, 0
            while index < len(left) - 1 and point >= left[index][0]:
                point -= left[index][0]
                index += 1
        chosen.append(left.pop(index)[1])
    return chosen

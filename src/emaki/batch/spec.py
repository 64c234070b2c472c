"""Reading a batch file: JSON Lines, one `GenerationParams` object per line (the native API's
field names, `speed` too), each line validated and judged by the prompt policy before anything runs.

Each item gets a content key: a hash of its canonical params JSON (the fields that differ from
the defaults, keys sorted), so reordering or reformatting the file keeps every key. The key names
the item's output files and decides its seeds: `seed: -1` (random) is drawn from the key, so a
rerun makes the same image. Lines with the same params and a random seed are different draws
(the second is keyed as the second); with a fixed seed they are the same image, made once.

File paths in a line (`init_image`, `mask`, a model file) are taken as given, relative to the
current folder, and only their names enter the key: a file changed under the same name is not
noticed by a rerun. With the Ray executor they must exist on the workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emaki.engine.policy import ensure_params_allowed
from emaki.errors import EmakiError, ParamsError, PolicyViolation
from emaki.jobs.rendered import JobRequest
from emaki.params import GenerationParams, expand_speed, quotable

KEY_HEX = 16  # 64 bits of the hash: no collision in any batch a person runs (1e-10 at 10^5 items)
MAX_LINE_CHARS = 1_000_000  # a line is one params object; prompts are bounded far below this


@dataclass(frozen=True)
class BatchItem:
    line: int  # 1-based line number in the batch file
    key: str
    params: GenerationParams  # seeds resolved from the key

    @property
    def images(self) -> int:
        return self.params.batch_size * self.params.n_iter

    def request(self) -> JobRequest:
        return JobRequest(self.key, self.params)


def canonical_json(params: GenerationParams) -> str:
    """The params as one canonical JSON text: only fields that differ from the defaults (a field
    added to `GenerationParams` later keeps old keys), keys sorted, no spaces."""
    fields = params.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def keyed(params: GenerationParams, repeat: int = 0) -> tuple[str, GenerationParams]:
    """(key, params with seed and subseed -1 drawn from the key's hash): the `repeat`-th earlier
    copy of the same random-seed params gets its own key, and so its own seed."""
    text = canonical_json(params)
    if repeat and params.seed == -1:
        text += f"\n#{repeat}"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    seeds: dict[str, int] = {}
    if params.seed == -1:
        seeds["seed"] = int(digest[KEY_HEX:KEY_HEX + 8], 16)  # 32 bits: within MAX_SEED
    if params.subseed == -1:
        seeds["subseed"] = int(digest[KEY_HEX + 8:KEY_HEX + 16], 16)
    return digest[:KEY_HEX], params.updated(**seeds) if seeds else params


def parse_line(text: str, where: str) -> GenerationParams:
    """One line's params; an error names `where` (file:line) and the field."""
    try:
        fields: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParamsError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(fields, dict):
        raise ParamsError(f"{where}: expected a JSON object of generation parameters, got {type(fields).__name__}")
    try:
        return GenerationParams.create(**expand_speed(fields))
    except ParamsError as e:
        raise ParamsError(f"{where}: {e}") from None


def item_params(fields: Any, where: str) -> GenerationParams:
    """One item's params from its decoded JSON (a batch sent over HTTP), checked as a file's line
    is; a bad field raises `ParamsError` naming `where.field` (`items[2].steps`)."""
    if not isinstance(fields, dict):
        raise ParamsError(f"{where}: expected a JSON object of generation parameters, got {type(fields).__name__}")
    try:
        return GenerationParams(**expand_speed(fields))
    except ParamsError as e:  # a speed preset's name
        raise ParamsError(f"{where}.{e}") from None
    except ValidationError as e:
        problems = []
        for error in e.errors():
            field = ".".join([where, *(str(part) for part in error["loc"])])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {message} (got {quotable(error.get('input'))!r})" if error["loc"]
                            else f"{field}: {message}")
        raise ParamsError("; ".join(problems)) from None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EmakiError(f"{path}: no such batch file") from None
    except UnicodeDecodeError as e:
        raise EmakiError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise EmakiError(f"{path}: cannot read the batch file ({e.strerror or e})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise ParamsError(f"{path}:{number}: the line is {len(line):,} characters, more than {MAX_LINE_CHARS:,}")
        if line.strip():
            lines.append((number, line))
    return lines


def read_batch(path: Path) -> list[BatchItem]:
    """Every item of the batch file `path`, all validated and judged first: the first bad line
    raises `ParamsError`, the first refused prompt `PolicyViolation`, naming `path:line`."""
    lines = read_lines(path)
    if not lines:
        raise ParamsError(f"{path}: the batch file holds no lines")
    parsed = [(number, parse_line(text, f"{path}:{number}")) for number, text in lines]
    for number, params in parsed:
        try:
            ensure_params_allowed(params)
        except PolicyViolation as e:
            raise PolicyViolation(f"{path}:{number}: {e}") from None
    return keyed_items(parsed)


def keyed_items(parsed: list[tuple[int, GenerationParams]]) -> list[BatchItem]:
    """(line, params) pairs as items with their content keys, in order (a repeat of random-seed
    params keyed as the repeat it is)."""
    seen: dict[str, int] = {}
    items = []
    for number, params in parsed:
        text = canonical_json(params)
        key, resolved = keyed(params, seen.get(text, 0))
        seen[text] = seen.get(text, 0) + 1
        items.append(BatchItem(number, key, resolved))
    return items

"""Batch files and fake workers for the `emaki batch` tests."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from emaki.engine.output import png_info
from emaki.jobs.rendered import JobOutcome, JobRequest, RenderedImage

TINY = {"width": 64, "height": 64, "steps": 2}  # the demo model, as fast as it goes


def write_jsonl(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    """One line per entry: a dict as JSON, a string as it is (for broken lines)."""
    path.write_text("".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines))
    return path


def fake_png(text: str) -> RenderedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG", pnginfo=png_info(text))
    return RenderedImage(buffer.getvalue(), text, 1, 1, 8, 8)


class FakeExecutor:
    """Answers every request at once with one small PNG per image, without an engine."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def outcomes(self, requests: Sequence[JobRequest]) -> Iterator[JobOutcome]:
        for request in requests:
            self.ran.append(request.key)
            count = request.params.batch_size * request.params.n_iter
            yield JobOutcome(request.key, images=[fake_png(request.params.prompt)] * count,
                             facts={"seconds": 0.01})

    def close(self) -> None:
        pass

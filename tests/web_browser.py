"""What the web page tests share about the browser: Debian's headless Chromium, its flags, and how
long a page may wait (generations on a slow shared CPU). The `browser` fixture is in
tests/server/conftest.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 60_000


def open_merge_tab_on_two_checkpoints(page: Any, server: Any, tiny: Path) -> Path:
    """Copies of `tiny` as checkpoints `a` and `b` in `server`'s model folder, listed again, and the
    Merge tab open with A = a and B = b; returns the model folder."""
    from playwright.sync_api import expect

    folder = server.home / "models"
    folder.mkdir(exist_ok=True)
    for name in ("a", "b"):
        shutil.copy(tiny, folder / f"{name}.safetensors")
    with server.client() as api:
        api.post("/sdapi/v1/refresh-checkpoints")
    page.locator("#tab-merge").click()
    expect(page.locator("#merge-a option[value='a']")).to_have_count(1)
    page.locator("#merge-a").select_option("a")
    page.locator("#merge-b").select_option("b")
    return folder

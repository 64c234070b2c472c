"""What the web page tests share about the browser: Debian's headless Chromium, its flags, and how
long a page may wait (generations on a slow shared CPU). The `browser` fixture is in
tests/server/conftest.py."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 60_000

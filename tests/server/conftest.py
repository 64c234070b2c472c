"""A real `emaki serve` in a subprocess (its own EMAKI_HOME), for client and browser tests, and the
headless Chromium (Debian's, driven by Playwright) the web page tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_browser import CHROMIUM, LAUNCH_ARGS, WAIT_MS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """One `emaki serve` process; `restart()` starts a new process on the same home and port."""

    home: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    auth: tuple[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # A hang guard: under `make test` a server and its worker share one core (tests/worker_cores.py),
    # and on a busy machine its imports alone took over 60 s.
    def start(self, timeout: float = 180.0) -> LiveServer:
        env = os.environ | {"EMAKI_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "emaki", "serve", "--port", str(self.port), *self.args],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.log()}")
            try:
                httpx.get(self.url + "/api/health", auth=self.auth, headers=self.headers, timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    def log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, headers=self.headers, timeout=120)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The server on the bundled demo model, no auth."""
    server = LiveServer(tmp_path / "home")
    server.home.mkdir()
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server on the demo model for a whole module's tests (its own home). The per-test
    environment (tests/conftest.py) is not set yet at module scope: the server gets it here."""
    server = LiveServer(tmp_path_factory.mktemp("module-home"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("EMAKI_A1111", ""), ("EMAKI_PRECISION", "fp32"), ("HF_HUB_OFFLINE", "1")):
            patch.setenv(name, value)
        server.start()
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start servers with extra flags: `server_factory(["--api-auth", "u:p"], auth=("u", "p"))`."""
    started: list[LiveServer] = []

    def start(args: list[str] | None = None, **kwargs) -> LiveServer:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        server = LiveServer(home, args or [], **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _browser_unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium; in CI a missing browser fails the test instead of skipping it."""
    reason = _browser_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"web page test cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()

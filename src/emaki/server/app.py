"""The FastAPI application behind `emaki serve`: auth, size limits, error mapping, the two APIs
and the web page, with the job store and the worker started and stopped with the app.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from emaki.devices import DevicePolicy
from emaki.engine.engine import Engine
from emaki.errors import EmakiError, ParamsError
from emaki.jobs.executor import LocalExecutor
from emaki.jobs.store import FINISHED, Job, JobStore
from emaki.jobs.worker import Worker
from emaki.server import a1111, api
from emaki.server.catalog import Catalog
from emaki.server.options import Options
from emaki.server.service import Service, error_status
from emaki.version import __version__
from emaki.workspace import Workspace, workspace_from_environment

log = logging.getLogger("emaki.server")
WEB_DIR = Path(__file__).parent / "web"


@dataclass
class ServerSettings:
    """What `emaki serve` was started with."""

    host: str = "127.0.0.1"
    port: int = 7860
    credentials: dict[str, str] = field(default_factory=dict)  # --api-auth user:pass,...
    token: str | None = None  # --token (Bearer)
    max_body_bytes: int = 32 * 1024 * 1024
    precision: str | None = None
    threads: int | None = None  # --threads (default: the idle cores)
    workspace: Workspace | None = None  # default: from EMAKI_HOME / EMAKI_A1111
    run_worker: bool = True

    @property
    def needs_auth(self) -> bool:
        return bool(self.credentials or self.token)

    def flags(self) -> dict[str, Any]:
        """`/sdapi/v1/cmd-flags`: the flags, without secrets."""
        return {"listen": self.host not in ("127.0.0.1", "localhost"), "port": self.port,
                "api_auth": bool(self.credentials), "token": bool(self.token), "precision": self.precision,
                "a1111": str(self.workspace.a1111) if self.workspace and self.workspace.a1111 else None,
                "api": True, "nowebui": False}


def parse_credentials(text: str) -> dict[str, str]:
    """`user:pass[,user2:pass2]` (A1111's `--api-auth`)."""
    credentials = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ParamsError(f"--api-auth: expected user:password[,user2:password2], got {item!r}")
        credentials[user] = password
    return credentials


class JobWaiters:
    """Lets request handlers await a job's end without polling the database: the store calls
    back from the worker thread and the event loop is woken at once."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._events: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.store.on_finish.append(self._finished_in_thread)

    def _finished_in_thread(self, job_id: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._set, job_id)

    def _set(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()

    async def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """The job once it has ended, or None when `timeout` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            while True:
                job = self.store.get(job_id)
                if job is None or job.status in FINISHED:
                    return job
                remaining = 5.0 if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    return None
                try:  # the 5 s cap only guards against a lost wake-up
                    await asyncio.wait_for(event.wait(), timeout=min(remaining, 5.0))
                except TimeoutError:
                    pass
                event.clear()
        finally:
            waiting = self._events.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._events.pop(job_id, None)


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over the limit, declared or streamed."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = f'{{"detail":"request body over the {self.limit} byte limit"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _authorized(request: Request, settings: ServerSettings) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and settings.token:
        return secrets.compare_digest(value.strip().encode(), settings.token.encode())
    if scheme.lower() == "basic" and settings.credentials:
        try:
            user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = settings.credentials.get(user)
        return expected is not None and secrets.compare_digest(password.encode(), expected.encode())
    return False


def require_auth(request: Request) -> None:
    settings: ServerSettings = request.app.state.settings
    if settings.needs_auth and not _authorized(request, settings):
        scheme = "Basic" if settings.credentials else "Bearer"
        raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": scheme})


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    workspace = settings.workspace or workspace_from_environment(os.environ)
    settings = replace(settings, workspace=workspace)  # what `cmd-flags` reports is what runs
    engine = Engine(workspace, DevicePolicy.choose(settings.precision, threads=settings.threads))
    store = JobStore(workspace.database)
    worker = Worker(store, LocalExecutor(engine))
    service = Service(store, worker, Catalog(workspace, engine.networks), Options(workspace.home / "server-options.json"),
                      workspace.home / "inputs", engine)

    def trained(job_id: str) -> None:  # a training job wrote a file the listings should show
        job = store.get(job_id)
        if job is not None and job.kind == "train":
            service.catalog.invalidate()

    store.on_finish.append(trained)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recovered = store.recover()
        if any(recovered.values()):
            log.warning("jobs left by the last run: %s", recovered)
        app.state.waiters.attach(asyncio.get_running_loop())
        if settings.run_worker:
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            store.close()

    app = FastAPI(title="emaki", version=__version__, lifespan=lifespan,
                  description="A1111-compatible `/sdapi/v1` and emaki's native `/api` (queued jobs, "
                              "progress events, gallery).")
    app.state.settings = settings
    app.state.service = service
    app.state.waiters = JobWaiters(store)
    guarded = [Depends(require_auth)]
    app.include_router(a1111.router, dependencies=guarded)
    app.include_router(api.router, dependencies=guarded)

    @app.exception_handler(EmakiError)
    async def emaki_error(request: Request, error: EmakiError) -> JSONResponse:
        return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=error_status(error))

    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


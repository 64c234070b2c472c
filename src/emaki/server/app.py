"""The FastAPI application behind `emaki serve`: access checks (access.py), size limits, error
mapping, the two APIs and the web page, with the job store, the worker and the watcher that
wakes event streams (changes.py) started and stopped with the app; what a job leaves behind (its
upload, images nobody collects) goes when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from emaki.devices import DevicePolicy
from emaki.engine.engine import Engine
from emaki.errors import EmakiError, ParamsError
from emaki.jobs.executor import Executor, LocalExecutor
from emaki.jobs.file_jobs import WRITING_KINDS, FileJobs
from emaki.jobs.store import FINISHED, JobStore
from emaki.jobs.worker import Worker
from emaki.server import a1111, api, batching, merging
from emaki.server.access import LOOPBACK_BINDS, AccessGuard, SignInThrottle
from emaki.server.catalog import Catalog
from emaki.server.changes import ChangeBell, JobWaiters, watch_changes
from emaki.server.options import Options
from emaki.server.service import Service, error_status, remove_input, sweep_inputs, uploaded_inputs
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
    compile: bool = False  # --compile: torch.compile the UNet (emaki.engine.speed.compile)
    workspace: Workspace | None = None  # default: from EMAKI_HOME / EMAKI_A1111
    run_worker: bool = True
    allowed_hosts: tuple[str, ...] = ()  # --allowed-hosts: names besides localhost a loopback bind answers
    executor: str = "local"  # --executor: local (this process) or ray (generations on a Ray cluster)
    ray_address: str | None = None  # --ray-address: auto, host:port, or local (start one in this process)
    workers: int | None = None  # --workers: Ray actors (default: the cluster's GPUs, else its CPUs)

    @property
    def needs_auth(self) -> bool:
        return bool(self.credentials or self.token)

    def flags(self) -> dict[str, Any]:
        """`/sdapi/v1/cmd-flags`: the flags, without secrets."""
        return {"listen": self.host not in LOOPBACK_BINDS, "port": self.port,
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


class UncollectedImages:
    """Jobs whose images no route returns (a native job with `save: false`): the worker's hold
    of them is dropped when they end instead of sitting in memory for 15 minutes (an A1111
    request takes its job's images itself)."""

    def __init__(self, store: JobStore, worker: Worker) -> None:
        self.store = store
        self.worker = worker
        self._ids: set[str] = set()
        self._lock = threading.Lock()  # added by request threads, ended by the worker thread

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids.add(job_id)
        job = self.store.get(job_id)
        if job is not None and job.status in FINISHED:  # it ended before it was added
            self.ended(job_id)

    def ended(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._ids:
                return
            self._ids.discard(job_id)
        self.worker.take_held(job_id)


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


def begin_shutdown(app: FastAPI) -> None:
    """The server is about to stop (SIGTERM, Ctrl+C), before it waits for open requests to end:
    interrupt the running job, end the event streams and answer the requests waiting on jobs
    that will not run now; otherwise they would hold the server open. Safe to call again."""
    app.state.service.worker.stop(timeout=0)  # sets the flags; the lifespan's stop joins the thread
    app.state.changes.close()
    app.state.waiters.stop()


def make_executor(settings: ServerSettings, engine: Engine) -> Executor:
    """Where jobs run: on `engine`, or (`--executor ray`) generations on a Ray cluster's actors,
    the rest on `engine`. Ray is imported only then."""
    local = LocalExecutor(engine)
    if settings.executor != "ray":
        return local
    from emaki.jobs.ray_serve import RayServeExecutor

    return RayServeExecutor.connect(settings.ray_address, local, workers=settings.workers,
                                    threads=settings.threads or 1, precision=settings.precision,
                                    compile=settings.compile)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    workspace = settings.workspace or workspace_from_environment(os.environ)
    settings = replace(settings, workspace=workspace)  # what `cmd-flags` reports is what runs
    engine = Engine(workspace, DevicePolicy.choose(settings.precision, threads=settings.threads,
                                                   compile=settings.compile))
    store = JobStore(workspace.database)
    executor = make_executor(settings, engine)
    worker = Worker(store, executor, FileJobs(workspace, engine.hashes))
    service = Service(store, worker, Catalog(workspace, engine.networks), Options(workspace.home / "server-options.json"),
                      workspace.home / "inputs", engine)

    uncollected = UncollectedImages(store, worker)

    def job_ending(job_id: str) -> None:  # before its end is recorded: a client that sees it done sees its file
        try:  # a listing must not fail the job, nor reach the worker
            job = store.get(job_id)
            if job is not None and job.kind in ("train", *WRITING_KINDS):  # it wrote a file the listings should show
                service.catalog.invalidate()
        except Exception:
            log.exception("as job %s ended", job_id)

    def job_ended(job_id: str) -> None:  # in the thread that ended it (the worker's, or a cancel's)
        uncollected.ended(job_id)
        try:  # tidying up must not fail the job, nor reach the worker
            job = store.get(job_id)
            if job is not None:
                remove_input(job.params, service.inputs)  # a requeued job does not end: its upload stays
        except Exception:
            log.exception("after job %s ended", job_id)

    store.before_finish.append(job_ending)
    store.on_finish.append(job_ended)
    bell = ChangeBell()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recovered = store.recover()
        if any(recovered.values()):
            log.warning("jobs left by the last run: %s", recovered)
        waiting = store.jobs("queued", 1_000_000) + store.jobs("running", 1_000_000)
        sweep_inputs(service.inputs, {path for job in waiting for path in uploaded_inputs(job.params)})
        loop = asyncio.get_running_loop()
        bell.attach()
        app.state.waiters.attach(loop)
        watcher = asyncio.create_task(watch_changes(bell, worker, str(workspace.database)))
        if settings.run_worker:
            worker.start()
        try:
            yield
        finally:
            begin_shutdown(app)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            worker.stop()
            executor.close()
            store.close()

    app = FastAPI(title="emaki", version=__version__, lifespan=lifespan,
                  description="A1111-compatible `/sdapi/v1` and emaki's native `/api` (queued jobs, "
                              "progress events, gallery).")
    app.state.settings = settings
    app.state.service = service
    app.state.changes = bell
    app.state.waiters = JobWaiters(store, bell)
    app.state.uncollected = uncollected
    app.state.sign_ins = SignInThrottle()  # failed sign-ins per client address, for this app only
    app.include_router(a1111.router)
    app.include_router(api.router)
    app.include_router(merging.router)
    app.include_router(batching.router)

    @app.exception_handler(EmakiError)
    async def emaki_error(request: Request, error: EmakiError) -> JSONResponse:
        return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=error_status(error))

    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    # Outermost: Host, Origin and credentials are checked before a body is read or a route runs,
    # for every path (the page, `/docs` and `/openapi.json` included).
    app.add_middleware(AccessGuard, settings=settings, throttle=app.state.sign_ins)
    @app.api_route("/sdapi/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_a1111_route(path: str) -> JSONResponse:
        """A route A1111 has and emaki does not (or a typo): 404, not the web page's 405."""
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app

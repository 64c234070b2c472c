"""`emaki serve`: start the HTTP server (A1111-compatible API, native API, web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emaki.cli import app, cli_workspace, use_compile_cache
from emaki.errors import EmakiError, ParamsError

GRACEFUL_SECONDS = 10  # after a stop signal, requests still open then are cut (a hang guard)
EXECUTORS = ("local", "ray")


@app.command("serve")
def serve_command(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = "127.0.0.1",
    listen: Annotated[bool, typer.Option("--listen", help="Bind 0.0.0.0 (needs --api-auth or --token).")] = False,
    api_auth: Annotated[str | None, typer.Option("--api-auth", help="HTTP Basic credentials: user:pass[,user2:pass2].")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="Bearer token clients must send (a browser: any user name, the token as password).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto (default: bf16 on a CPU with AVX-512 BF16 or AMX, fp16 on a GPU, else fp32), fp32, bf16, fp16.", envvar="EMAKI_PRECISION")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores).")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the UNet: the same images, faster steps after a first one that compiles (cached in EMAKI_HOME/cache/compile; with --executor ray each actor compiles its own, cached in its workspace).")] = False,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to take models from (default: EMAKI_A1111).")] = None,
    max_body_mb: Annotated[int, typer.Option("--max-body-mb", help="Largest request body accepted (MiB).")] = 32,
    allowed_hosts: Annotated[str | None, typer.Option(
        "--allowed-hosts", help="Host names besides localhost/127.0.0.1/[::1] this server answers to "
                                "on a loopback bind, and whose pages may post to it: h1,h2.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (this process) or ray (generations on a Ray "
                                                             "cluster's workers; pip install 'emaki\\[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="With --executor ray: auto (the cluster `ray start` runs here, the default), "
                              "host:port, or local (start one in this process).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="With --executor ray: worker actors, one engine "
                                                                  "each (default: the cluster's GPUs, else its CPUs / --threads).")] = None,
) -> None:
    """Serve the A1111-compatible API (/sdapi/v1), emaki's API (/api) and the web page (/)."""
    from emaki.devices import DevicePolicy
    from emaki.server import ServerSettings, create_app, parse_credentials
    from emaki.server.access import LOOPBACK_BINDS, parse_allowed_hosts

    if listen:
        host = "0.0.0.0"
    credentials = parse_credentials(api_auth) if api_auth else {}
    if host not in LOOPBACK_BINDS and not (credentials or token):
        raise EmakiError(f"--listen/--host {host}: refusing to serve other machines without --api-auth or --token")
    names = parse_allowed_hosts(allowed_hosts) if allowed_hosts else ()
    DevicePolicy.choose(precision, threads=threads)  # a bad --precision/--threads fails before binding
    check_executor(executor, ray_address, workers)
    workspace = cli_workspace(a1111)
    if compile:
        use_compile_cache(workspace)
    settings = ServerSettings(host=host, port=port, credentials=credentials, token=token, compile=compile,
                              max_body_bytes=max_body_mb * 1024 * 1024, precision=precision, threads=threads,
                              workspace=workspace, allowed_hosts=names, executor=executor,
                              ray_address=(ray_address or "auto") if executor == "ray" else None, workers=workers)
    typer.echo(f"emaki serving on http://{host}:{port}/  (API: /sdapi/v1, /api; docs: /docs)")
    run_server(create_app(settings), host, port)


def check_executor(executor: str, ray_address: str | None, workers: int | None) -> None:
    if executor not in EXECUTORS:
        raise ParamsError(f"--executor: expected local or ray, got {executor!r}")
    if executor != "ray" and (ray_address is not None or workers is not None):
        raise ParamsError("--ray-address/--workers: only with --executor ray")
    if workers is not None and workers < 1:
        raise ParamsError(f"--workers: expected 1 or more, got {workers}")


def run_server(application: Any, host: str, port: int) -> None:
    """uvicorn, told to stop the app's work first when it stops (SIGTERM, Ctrl+C): uvicorn waits
    for open requests before it ends the app, and event streams and requests waiting on jobs
    would otherwise keep it waiting for ever."""
    import uvicorn

    from emaki.server.app import begin_shutdown

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            begin_shutdown(application)
            await super().shutdown(sockets)

    server = Server(uvicorn.Config(application, host=host, port=port, log_level="warning",
                                   timeout_graceful_shutdown=GRACEFUL_SECONDS))
    server.run()  # a stop signal is raised again once the server has stopped (uvicorn's convention)
    if not server.started:
        raise EmakiError(f"could not serve on {host}:{port} (the reason is logged above)")

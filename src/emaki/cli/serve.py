"""`emaki serve`: start the HTTP server (A1111-compatible API, native API, web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emaki.cli import app, cli_workspace
from emaki.devices import DevicePolicy
from emaki.errors import EmakiError

GRACEFUL_SECONDS = 10  # after a stop signal, requests still open then are cut (a hang guard)


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
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to take models from (default: EMAKI_A1111).")] = None,
    max_body_mb: Annotated[int, typer.Option("--max-body-mb", help="Largest request body accepted (MiB).")] = 32,
    allowed_hosts: Annotated[str | None, typer.Option(
        "--allowed-hosts", help="Host names besides localhost/127.0.0.1/[::1] this server answers to "
                                "on a loopback bind, and whose pages may post to it: h1,h2.")] = None,
) -> None:
    """Serve the A1111-compatible API (/sdapi/v1), emaki's API (/api) and the web page (/)."""
    from emaki.server import ServerSettings, create_app, parse_credentials
    from emaki.server.access import LOOPBACK_BINDS, parse_allowed_hosts

    if listen:
        host = "0.0.0.0"
    credentials = parse_credentials(api_auth) if api_auth else {}
    if host not in LOOPBACK_BINDS and not (credentials or token):
        raise EmakiError(f"--listen/--host {host}: refusing to serve other machines without --api-auth or --token")
    names = parse_allowed_hosts(allowed_hosts) if allowed_hosts else ()
    DevicePolicy.choose(precision, threads=threads)  # a bad --precision/--threads fails before binding
    settings = ServerSettings(host=host, port=port, credentials=credentials, token=token,
                              max_body_bytes=max_body_mb * 1024 * 1024, precision=precision, threads=threads,
                              workspace=cli_workspace(a1111), allowed_hosts=names)
    typer.echo(f"emaki serving on http://{host}:{port}/  (API: /sdapi/v1, /api; docs: /docs)")
    run_server(create_app(settings), host, port)


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

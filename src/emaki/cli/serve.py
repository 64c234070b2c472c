"""`emaki serve`: start the HTTP server (A1111-compatible API, native API, web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emaki.cli import app, cli_workspace
from emaki.devices import DevicePolicy
from emaki.errors import EmakiError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command("serve")
def serve_command(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = "127.0.0.1",
    listen: Annotated[bool, typer.Option("--listen", help="Bind 0.0.0.0 (needs --api-auth or --token).")] = False,
    api_auth: Annotated[str | None, typer.Option("--api-auth", help="HTTP Basic credentials: user:pass[,user2:pass2].")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token clients must send.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="fp32 (default on CPU), bf16, fp16 (GPU).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads (default: the idle cores).")] = None,
    a1111: Annotated[Path | None, typer.Option("--a1111", help="An A1111 install to take models from (default: EMAKI_A1111).")] = None,
    max_body_mb: Annotated[int, typer.Option("--max-body-mb", help="Largest request body accepted (MiB).")] = 32,
) -> None:
    """Serve the A1111-compatible API (/sdapi/v1), emaki's API (/api) and the web page (/)."""
    import uvicorn

    from emaki.server import ServerSettings, create_app, parse_credentials

    if listen:
        host = "0.0.0.0"
    credentials = parse_credentials(api_auth) if api_auth else {}
    if host not in LOOPBACK and not (credentials or token):
        raise EmakiError(f"--listen/--host {host}: refusing to serve other machines without --api-auth or --token")
    DevicePolicy.choose(precision, threads=threads)  # a bad --precision/--threads fails before binding
    settings = ServerSettings(host=host, port=port, credentials=credentials, token=token,
                              max_body_bytes=max_body_mb * 1024 * 1024, precision=precision, threads=threads,
                              workspace=cli_workspace(a1111))
    typer.echo(f"emaki serving on http://{host}:{port}/  (API: /sdapi/v1, /api; docs: /docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")

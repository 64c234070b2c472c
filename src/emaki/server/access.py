"""Who may use the server, checked before any route runs:

- the `Host` header on a loopback bind: a DNS-rebinding page (evil.example resolved to 127.0.0.1)
  reaches the server with its own name in `Host`, so only the loopback names (and the user's
  `--allowed-hosts`) are answered;
- the `Origin` header of requests that change state: a browser sends it, so a page from another
  site cannot post (even body-less `interrupt`, `skip`, `refresh-*`); clients that send none
  (curl, webuiapi, Python) are not browsers and pass;
- the credentials of `--api-auth` / `--token` on every path (the page and the docs too), with
  failed sign-ins counted per client address and answered 429 once there are too many.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from emaki.errors import ParamsError

if TYPE_CHECKING:
    from emaki.server.app import ServerSettings

LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")  # `--host` values that serve this machine only
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")  # `Host` names a loopback bind answers
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
API_PREFIXES = ("/api/", "/sdapi/")
PAGE_CHALLENGE = 'Basic realm="emaki", charset="UTF-8"'  # makes a browser ask for a user and password


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """`--allowed-hosts h1,h2`: host names (any port), lower-case; `[::1]`-style brackets are dropped."""
    names = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name = item.lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        elif name.count(":") == 1:
            raise ParamsError(f"--allowed-hosts: {item!r}: give host names without a port (any port is accepted)")
        if not name or any(c in name for c in "/@ []"):
            raise ParamsError(f"--allowed-hosts: {item!r} is not a host name")
        names.append(name)
    return tuple(names)


def host_and_port(value: str, default_port: int) -> tuple[str, int | None]:
    """`example.com:7860` → ("example.com", 7860); `[::1]` → ("::1", default_port); a bad port → None."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:  # no port, or a bare IPv6 address
        name, port_text = value, ""
    if not port_text:
        return name.rstrip("."), default_port
    return name.rstrip("."), int(port_text) if port_text.isdigit() else None


class SignInThrottle:
    """Failed sign-ins per client address: after `limit` different wrong credentials within
    `window` seconds the address waits until the oldest of them is `window` old. The same wrong
    credentials sent again count once (a page sends them with each of its requests; a guesser
    has to vary them). At most `max_clients` addresses are remembered (the oldest forgotten
    first), so rotating addresses cannot grow it without bound; only digests are kept."""

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_clients = max_clients
        self._failures: dict[str, dict[str, float]] = {}  # address → {digest of the credentials: when}

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str) -> float | None:
        """Seconds `client` must wait before trying again; None when it may try now."""
        failures = self._recent(client)
        if len(failures) < self.limit:
            return None
        return min(failures.values()) + self.window - self.clock()

    def failed(self, client: str, credentials: str) -> None:
        failures = self._recent(client)
        failures.setdefault(hashlib.sha256(credentials.encode()).hexdigest(), self.clock())
        self._failures.pop(client, None)  # re-inserted last: the dict is ordered oldest first
        self._failures[client] = failures
        while len(self._failures) > self.max_clients:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> dict[str, float]:
        cutoff = self.clock() - self.window
        failures = {digest: when for digest, when in self._failures.get(client, {}).items() if when > cutoff}
        if failures:
            self._failures[client] = failures
        else:
            self._failures.pop(client, None)
        return failures


def credentials_accepted(header: str, settings: ServerSettings) -> bool:
    """An `Authorization` value: `Bearer <token>`, or `Basic` with a `--api-auth` user's password
    or (so that a browser's sign-in dialog can open the page) the token as the password."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and settings.token:
        return secrets.compare_digest(value.strip().encode(), settings.token.encode())
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return False
    expected = settings.credentials.get(user)
    if expected is not None and secrets.compare_digest(password.encode(), expected.encode()):
        return True
    return bool(settings.token) and secrets.compare_digest(password.encode(), (settings.token or "").encode())


class Refusal(Exception):
    """A request answered before any route runs."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class AccessGuard:
    """ASGI middleware: the Host, Origin and credential checks above, in that order."""

    def __init__(self, app: Callable, settings: ServerSettings, throttle: SignInThrottle) -> None:
        self.app = app
        self.settings = settings
        self.throttle = throttle

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except Refusal as refusal:
            await send_refusal(send, refusal)
            return
        await self.app(scope, receive, send)

    def check(self, scope: dict[str, Any]) -> None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers") or []}
        default_port = DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
        host = host_and_port(headers.get("host", ""), default_port)
        if self._checks_host(scope):
            self.check_host(headers.get("host", ""), host[0])
        if scope.get("method", "GET") in STATE_CHANGING and "origin" in headers:
            self.check_origin(headers["origin"], host)
        if self.settings.needs_auth:
            self.check_credentials(scope, headers.get("authorization"))

    def _checks_host(self, scope: dict[str, Any]) -> bool:
        """On a loopback bind, for requests that came through a loopback socket (an in-process
        client, such as the tests', has no socket a browser could reach)."""
        if self.settings.host not in LOOPBACK_BINDS:
            return False  # serving other machines: names are theirs to choose, credentials protect it
        server = scope.get("server") or ("", None)
        try:
            return ipaddress.ip_address(str(server[0])).is_loopback
        except ValueError:
            return False

    def check_host(self, header: str, name: str) -> None:
        if name in LOOPBACK_NAMES or name in self.settings.allowed_hosts:
            return
        raise Refusal(400, f"Host header {header!r} is not a name of this server: bound to {self.settings.host}, "
                           "it answers localhost, 127.0.0.1 and [::1] (add names with --allowed-hosts)")

    def check_origin(self, origin: str, host: tuple[str, int | None]) -> None:
        try:
            parts = urlsplit(origin.strip())
            name, port = (parts.hostname or "").rstrip("."), parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            name, port = "", None
        if name and ((name, port) == host or name in self.settings.allowed_hosts):
            return
        raise Refusal(403, f"Origin {origin!r} may not change this server's state: only its own page "
                           "(and hosts named by --allowed-hosts) may")

    def check_credentials(self, scope: dict[str, Any], authorization: str | None) -> None:
        client = (scope.get("client") or ("unknown",))[0] or "unknown"
        wait = self.throttle.retry_after(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise Refusal(429, f"{self.throttle.limit} failed sign-ins from {client} within "
                               f"{self.throttle.window:g} s: try again in {seconds} s",
                          {"Retry-After": str(seconds)})
        if authorization is not None and credentials_accepted(authorization, self.settings):
            self.throttle.succeeded(client)
            return
        if authorization is not None:  # a request without credentials is not a failed sign-in
            self.throttle.failed(client, authorization)
        raise Refusal(401, "Incorrect username or password", {"WWW-Authenticate": self._challenge(scope)})

    def _challenge(self, scope: dict[str, Any]) -> str:
        """API clients get the scheme they should use; the page and the docs a Basic challenge
        with a realm, so that a browser shows its sign-in dialog (the token works as password)."""
        if str(scope.get("path", "")).startswith(API_PREFIXES):
            return "Basic" if self.settings.credentials else "Bearer"
        return PAGE_CHALLENGE


async def send_refusal(send: Callable, refusal: Refusal) -> None:
    body = json.dumps({"detail": refusal.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in refusal.headers.items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Who may use the server (issue 16, item 14): the Host check against DNS rebinding on loopback
binds, the Origin check on requests that change state, credentials on the page and the docs
too, and failed sign-ins throttled per client address. In-process (TestClient; its URL sets the
address the request arrived on), no worker."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emaki.cli import main
from emaki.errors import ParamsError
from emaki.server import ServerSettings, create_app
from emaki.workspace import Workspace

LOOPBACK_URL = "http://127.0.0.1:7860"
EVIL = "http://evil.example:7860"


def make_app(tmp_path: Path, **settings) -> FastAPI:
    return create_app(ServerSettings(workspace=Workspace(tmp_path / "home"), run_worker=False, **settings))


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[TestClient]:
    """A server bound to 127.0.0.1, reached on 127.0.0.1:7860."""
    with TestClient(make_app(tmp_path), base_url=LOOPBACK_URL) as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- Host (DNS rebinding) ---


def test_loopback_bind_refuses_a_rebound_host_name(loopback: TestClient) -> None:
    refused = loopback.get("/api/health", headers={"Host": "evil.example:7860"})
    assert refused.status_code == 400
    assert "evil.example:7860" in refused.json()["detail"] and "--allowed-hosts" in refused.json()["detail"]
    # the rebinding page would have reached every route, the page and the docs included
    for path in ("/", "/openapi.json", "/sdapi/v1/options"):
        assert loopback.get(path, headers={"Host": "evil.example"}).status_code == 400
    assert loopback.post("/sdapi/v1/interrupt", headers={"Host": "evil.example:7860"}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:7860", "LOCALHOST", "[::1]:7860", "127.0.0.1:9"])
def test_loopback_bind_answers_loopback_names_on_any_port(loopback: TestClient, host: str) -> None:
    assert loopback.get("/api/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_adds_names(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, allowed_hosts=("mybox.lan",)), base_url=LOOPBACK_URL) as client:
        assert client.get("/api/health", headers={"Host": "mybox.lan:7860"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "MyBox.lan"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "otherbox.lan"}).status_code == 400


def test_a_listening_server_leaves_host_names_to_its_credentials(tmp_path: Path) -> None:
    app = make_app(tmp_path, host="0.0.0.0", credentials={"u": "p"})
    with TestClient(app, base_url="http://192.168.1.5:7860") as client:
        assert client.get("/api/health", headers={"Host": "emaki.example"} | basic("u", "p")).status_code == 200
        assert client.get("/api/health", headers={"Host": "emaki.example"}).status_code == 401


def test_allowed_hosts_flag_is_parsed_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from emaki.server.access import parse_allowed_hosts

    assert parse_allowed_hosts(" MyBox.lan, [fe80::1] ,,emaki.example.") == ("mybox.lan", "fe80::1", "emaki.example")
    with pytest.raises(ParamsError, match="--allowed-hosts: 'mybox:8080'"):
        parse_allowed_hosts("mybox:8080")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--allowed-hosts", "mybox:8080", "--port", "1"])
    assert exit_.value.code == 2 and "--allowed-hosts: 'mybox:8080'" in capsys.readouterr().err


# --- Origin (cross-site requests that change state) ---


@pytest.mark.parametrize("path", ["/sdapi/v1/interrupt", "/sdapi/v1/skip", "/sdapi/v1/refresh-checkpoints",
                                  "/api/jobs/nosuchjob/cancel"])
def test_body_less_posts_from_another_origin_are_refused(loopback: TestClient, path: str) -> None:
    refused = loopback.post(path, headers={"Origin": EVIL})
    assert refused.status_code == 403 and EVIL in refused.json()["detail"]
    assert loopback.post(path, headers={"Origin": "null"}).status_code == 403  # sandboxed frames, file: pages
    assert loopback.post(path, headers={"Origin": "http://127.0.0.1:8080"}).status_code == 403  # another port
    assert loopback.post(path, headers={"Origin": "http://localhost:7860"}).status_code == 403  # another host


def test_own_origin_and_clients_without_origin_may_change_state(loopback: TestClient) -> None:
    assert loopback.post("/sdapi/v1/interrupt", headers={"Origin": LOOPBACK_URL}).status_code == 200
    assert loopback.post("/sdapi/v1/interrupt").status_code == 200  # curl, webuiapi, Python clients
    reached_as_localhost = {"Host": "localhost:7860", "Origin": "http://localhost:7860"}
    assert loopback.post("/sdapi/v1/interrupt", headers=reached_as_localhost).status_code == 200
    # reads are the browser's business (no CORS headers: another origin cannot read the answer)
    assert loopback.get("/api/health", headers={"Origin": EVIL}).status_code == 200


def test_allowed_hosts_may_send_state_changes(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, allowed_hosts=("studio.lan",)), base_url=LOOPBACK_URL) as client:
        assert client.post("/sdapi/v1/interrupt", headers={"Origin": "https://studio.lan"}).status_code == 200
        assert client.post("/sdapi/v1/interrupt", headers={"Origin": EVIL}).status_code == 403


# --- credentials on the page and the docs ---


@pytest.mark.parametrize("path", ["/", "/index.html", "/app.js", "/docs", "/openapi.json", "/redoc"])
def test_page_and_docs_ask_for_credentials(tmp_path: Path, path: str) -> None:
    with TestClient(make_app(tmp_path, credentials={"mika": "secret"}), base_url=LOOPBACK_URL) as client:
        refused = client.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic realm=")  # the browser's sign-in dialog
        assert client.get(path, headers=basic("mika", "secret")).status_code == 200


def test_token_server_page_accepts_the_token_as_a_basic_password(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, token="tok-123"), base_url=LOOPBACK_URL) as client:
        refused = client.get("/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic realm=")
        assert client.get("/", headers=basic("anyone", "tok-123")).status_code == 200
        assert client.get("/", headers={"Authorization": "Bearer tok-123"}).status_code == 200
        assert client.get("/", headers=basic("anyone", "nope")).status_code == 401
        # the API keeps its Bearer challenge (clients read it)
        assert client.get("/api/gallery").headers["www-authenticate"] == "Bearer"


# --- throttled sign-ins ---


def test_failed_sign_ins_are_throttled_per_client_address(tmp_path: Path) -> None:
    app = make_app(tmp_path, credentials={"mika": "secret"})
    with TestClient(app, base_url=LOOPBACK_URL, client=("10.0.0.1", 5000)) as attacker, \
            TestClient(app, base_url=LOOPBACK_URL, client=("10.0.0.2", 5000)) as neighbour:
        for guess in range(5):
            assert attacker.get("/api/health", headers=basic("mika", f"guess{guess}")).status_code == 401
        throttled = attacker.get("/api/health", headers=basic("mika", "guess5"))
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "5 failed sign-ins" in throttled.json()["detail"]
        # the right password does not get through either while the address waits
        assert attacker.get("/api/health", headers=basic("mika", "secret")).status_code == 429
        assert attacker.get("/", headers=basic("mika", "secret")).status_code == 429
        assert neighbour.get("/api/health", headers=basic("mika", "secret")).status_code == 200
    # the count belongs to that app, not to the process
    with TestClient(make_app(tmp_path / "other", credentials={"mika": "secret"}), base_url=LOOPBACK_URL,
                    client=("10.0.0.1", 5000)) as fresh:
        assert fresh.get("/api/health", headers=basic("mika", "secret")).status_code == 200


def test_requests_without_credentials_or_repeating_one_mistake_are_not_throttled(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, credentials={"mika": "secret"}), base_url=LOOPBACK_URL) as client:
        for _ in range(10):  # a browser's first request, before the dialog, carries none
            assert client.get("/").status_code == 401
        for _ in range(10):  # the page sends one mistyped password with each of its requests
            assert client.get("/api/health", headers=basic("mika", "typo")).status_code == 401
        assert client.get("/", headers=basic("mika", "secret")).status_code == 200


def test_throttle_forgets_failures_after_the_window() -> None:
    from emaki.server.access import SignInThrottle

    now = [1000.0]
    throttle = SignInThrottle(limit=3, window=60.0, clock=lambda: now[0])
    for guess in ("x", "y", "z"):
        assert throttle.retry_after("a") is None
        throttle.failed("a", guess)
    assert throttle.retry_after("a") == pytest.approx(60.0)
    now[0] += 45
    assert throttle.retry_after("a") == pytest.approx(15.0) and throttle.retry_after("b") is None
    now[0] += 15.5
    assert throttle.retry_after("a") is None
    throttle.failed("a", "x")
    throttle.succeeded("a")  # a success clears the address
    throttle.failed("a", "y")
    throttle.failed("a", "z")
    assert throttle.retry_after("a") is None


def test_the_same_wrong_credentials_count_once() -> None:
    from emaki.server.access import SignInThrottle

    throttle = SignInThrottle(limit=3, window=60.0, clock=lambda: 0.0)
    for _ in range(20):  # a page sends its (wrong) credentials with each of its requests
        throttle.failed("a", "Basic bWlrYTp3cm9uZw==")
    assert throttle.retry_after("a") is None


def test_throttle_memory_is_bounded() -> None:
    from emaki.server.access import SignInThrottle

    throttle = SignInThrottle(limit=5, window=60.0, clock=lambda: 0.0, max_clients=100)
    for address in range(1000):  # an attacker rotating addresses
        throttle.failed(f"10.0.{address // 256}.{address % 256}", "guess")
    assert len(throttle) <= 100

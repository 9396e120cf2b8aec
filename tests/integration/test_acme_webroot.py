"""ACME HTTP-01 through the real CLI, as docs/deploy.md sets it up: certbot's webroot
served under /.well-known/acme-challenge/ over plain HTTP while the rest of the port
redirects to https, and no other dot-name of the same directory served."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.integration.cli_proxy import CliProxy

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"  # the shape of an ACME token
KEY_AUTHORIZATION = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture
def webroot(tmp_path: Path) -> Path:
    """What `certbot certonly --webroot -w WEBROOT` leaves while it waits for the check,
    beside files that must never be served."""
    root = tmp_path / "acme"
    challenges = root / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_text(KEY_AUTHORIZATION)
    (challenges / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core] secret")
    (root / ".env").write_text("SECRET=1")
    return root


@pytest.fixture
def proxy(tmp_path: Path, webroot: Path) -> Iterator[CliProxy]:
    proxy = CliProxy(tmp_path, free_port())
    # The port 80 server of docs/deploy.md, then one that serves the same directory at /.
    proxy.config.write_text(
        f"""workers: 1
error_log: {{path: {proxy.error_log}, level: info}}
access_log: {{format: off}}
temp_path: {tmp_path}
servers:
  - listen: ["127.0.0.1:{proxy.port}"]
    locations:
      - {{path: /.well-known/acme-challenge/, root: {webroot}}}
      - {{path: /, return: {{status: 301, location: "https://$host$request_uri"}}}}
  - listen: ["127.0.0.1:{proxy.port}"]
    server_name: [files.test]
    locations:
      - {{path: /, root: {webroot}}}
"""
    )
    proxy.launch()
    try:
        wait_until(lambda: "ready (generation" in proxy.errors(), 20, "the worker to serve")
        yield proxy
    finally:
        assert proxy.stop() == 0, proxy.stderr + proxy.errors()


def get(proxy: CliProxy, path: str, host: str = "example.com") -> tuple[int, bytes, bytes]:
    """Status, head and body of one GET sent as raw bytes (no client normalises `path`)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def test_the_challenge_is_served_over_http_and_the_rest_redirects(proxy: CliProxy) -> None:
    status, head, body = get(proxy, f"/.well-known/acme-challenge/{TOKEN}")
    assert (status, body) == (200, KEY_AUTHORIZATION.encode())
    assert b"\r\nlocation:" not in head
    status, head, _ = get(proxy, "/some/page?x=1")
    assert status == 301
    assert b"\r\nlocation: https://example.com/some/page?x=1" in head
    assert get(proxy, "/.well-known/acme-challenge/missing")[0] == 404  # not redirected


def test_no_other_dot_name_is_served(proxy: CliProxy) -> None:
    # Where the whole directory is the root: the challenge, and no other dot-name.
    assert get(proxy, f"/.well-known/acme-challenge/{TOKEN}", "files.test")[0] == 200
    for path in (
        "/.git/config",
        "/%2egit/config",
        "/.env",
        "/.well-known/acme-challenge/.env",
        "/.well-known/../.git/config",
    ):
        status, _, body = get(proxy, path, "files.test")
        assert status == 404, path
        assert b"secret" not in body.lower(), path
    # On the port 80 server, a challenge path that names a dotfile is refused too.
    assert get(proxy, "/.well-known/acme-challenge/.env")[0] == 404

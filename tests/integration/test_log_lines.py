"""Log lines a person can read: request lines as text (`"GET /d3 HTTP/1.1"`, never `b'/d3'`),
and a request refused for its head logged with the request line it came with.

Through the real CLI (its error and access logs in files), in front of real gunicorn, once
per codec where the codec reads what is logged.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy.http.codec import CODECS
from tests.conftest import Gunicorn, free_port, wait_until
from tests.integration.cli_proxy import CliProxy, start_cli_proxy
from tests.integration.fake_upstreams import proxy_yaml


def new_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgeproxy-log-lines-"))
    (path / "spool").mkdir()
    return path


@pytest.fixture(scope="module", params=sorted(CODECS))
def edge(request: pytest.FixtureRequest, gunicorn_a: Gunicorn) -> Iterator[CliProxy]:
    """One edgeproxy per codec, combined access log; each test uses paths of its own."""
    directory = new_dir()
    text = proxy_yaml([f'"{gunicorn_a.address}"'])
    proxy = start_cli_proxy(text, directory, "combined", top=f"http_parser: {request.param}")
    yield proxy
    proxy.stop()
    shutil.rmtree(directory, ignore_errors=True)


def exchange(proxy: CliProxy, raw: bytes) -> bytes:
    """Send `raw` on a new connection; everything received until the proxy closes it."""
    with proxy.connect() as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def logged(proxy: CliProxy, marker: str) -> tuple[str, str]:
    """The access-log line and the error-log line that contain `marker` (waited for)."""

    def both() -> bool:
        return any(marker in line for line in proxy.access_lines()) and marker in proxy.errors()

    wait_until(both, 10, f"log lines with {marker}")
    access = next(line for line in proxy.access_lines() if marker in line)
    error = next(line for line in proxy.errors().splitlines() if marker in line)
    return access, error


@pytest.mark.parametrize(
    ("name", "fields"),
    [("missing", ""), ("duplicate", "Host: a\r\nHost: b\r\n")],
)
def test_a_request_refused_for_its_host_is_logged_with_its_request_line(
    edge: CliProxy, name: str, fields: str
) -> None:
    target = f"/host-{name}"
    raw = f"GET {target}?q=1 HTTP/1.1\r\n{fields}User-Agent: probe\r\n\r\n".encode()
    assert exchange(edge, raw).startswith(b"HTTP/1.1 400 ")
    access, error = logged(edge, target)
    assert f'"GET {target}?q=1 HTTP/1.1" 400 ' in access
    assert re.search(
        rf'client 127\.0\.0\.1: 400 .*Host.* \("GET {target}\?q=1 HTTP/1\.1"\)$', error
    )


def test_a_target_with_bytes_that_are_not_ascii_is_logged_escaped(edge: CliProxy) -> None:
    raw = b"GET /caf\xc3\xa9-bytes HTTP/1.1\r\nHost: x\r\n\r\n"
    assert exchange(edge, raw).startswith(b"HTTP/1.1 400 ")
    _, error = logged(edge, "/caf")
    assert error.endswith('("GET /caf\\xc3\\xa9-bytes HTTP/1.1")')  # one line of plain ASCII
    assert "b'" not in error


def test_a_malformed_request_line_is_not_invented(edge: CliProxy) -> None:
    raw = b"GET /two spaces HTTP/1.1\r\nHost: x\r\n\r\n"
    before = len(edge.access_lines())
    assert exchange(edge, raw).startswith(b"HTTP/1.1 400 ")
    wait_until(lambda: len(edge.access_lines()) > before, 10, "the access-log line")
    assert '"- - HTTP/-" 400 ' in edge.access_lines()[before]


def test_a_framing_error_is_logged_as_text(edge: CliProxy) -> None:
    raw = (
        b"POST /bad-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    )
    assert exchange(edge, raw).startswith(b"HTTP/1.1 400 ")
    _, error = logged(edge, "/bad-chunk")
    assert error.endswith('400 invalid chunk size "zz" ("POST /bad-chunk HTTP/1.1")')


def test_an_upstream_failure_names_the_request_line_as_text(gunicorn_a: Gunicorn) -> None:
    directory = new_dir()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    proxy = start_cli_proxy(proxy_yaml([f'"{dead}"']), directory, "combined")
    try:
        answer = exchange(proxy, b"GET /d3?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 502 ")
        _, error = logged(proxy, "/d3")
        assert f'upstream app: {dead} "GET /d3?x=1 HTTP/1.1": error: connect to {dead}: ' in error
        assert "b'" not in proxy.errors()
    finally:
        proxy.stop()
        shutil.rmtree(directory, ignore_errors=True)

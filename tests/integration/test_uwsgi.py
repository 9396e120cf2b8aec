"""`protocol: uwsgi` through the real proxy to real uWSGI processes (TCP and unix sockets)
serving tests/apps/wsgi_app.py, compared with the same app behind gunicorn over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeproxy.upstream.uwsgi import encode_packet
from tests.conftest import APPS, Gunicorn, async_wait_until, can_connect, free_port, wait_until
from tests.integration.fake_upstreams import proxy_yaml
from tests.tls_certs import TestCA

TIMEOUT = httpx.Timeout(30.0)
UWSGI = shutil.which("uwsgi")

# .ci/run installs uWSGI; elsewhere, without it, these tests are skipped (never under CI).
pytestmark = pytest.mark.skipif(
    UWSGI is None and not os.environ.get("CI"),
    reason="uWSGI is not installed (.ci/run installs uwsgi-core and uwsgi-plugin-python3)",
)


@dataclass
class Uwsgi:
    address: str  # "127.0.0.1:PORT" or "unix:/path"
    process: subprocess.Popen[bytes]
    name: str

    def stop(self) -> None:
        """Master and workers (they share a process group), whatever state they are in."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # uWSGI: INT stops, TERM reloads
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.process.wait(5)


def start_uwsgi(name: str, *, unix_path: str | None = None, processes: int = 2) -> Uwsgi:
    assert UWSGI is not None, "uWSGI is not installed: see .ci/run"
    address = f"unix:{unix_path}" if unix_path else f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            UWSGI, "--plugin", "python3", "--socket", unix_path or address,
            "--wsgi-file", str(APPS / "wsgi_app.py"), "--callable", "app",
            "--master", "--processes", str(processes), "--die-on-term",
            # Room for big request heads: uWSGI's default is 4 KiB of variables.
            "--buffer-size", "65535", "--disable-logging",
        ],
        env=dict(os.environ, APP_NAME=name),
        cwd=str(APPS),
        start_new_session=True,  # one process group, so a test can kill all of it at once
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    upstream = Uwsgi(address, process, name)
    try:
        wait_until(lambda: process.poll() is None and can_connect(address), 20, f"uwsgi {name}")
    except BaseException:
        upstream.kill()
        raise
    return upstream


@pytest.fixture(scope="module")
def uwsgi_a() -> Iterator[Uwsgi]:
    upstream = start_uwsgi("ua")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def uwsgi_b() -> Iterator[Uwsgi]:
    upstream = start_uwsgi("ub")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def uwsgi_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uwsgi]:
    path = tmp_path_factory.mktemp("usock") / "app.sock"
    upstream = start_uwsgi("uunix", unix_path=str(path))
    yield upstream
    upstream.stop()


def uwsgi_yaml(peers: list[str], *, upstream: str = "", http: str = "") -> str:
    return proxy_yaml(peers, upstream=f"protocol: uwsgi\n{upstream}", http=http)


async def get_all(url: str, paths: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        return [await asyncio.wait_for(client.get(path), 15) for path in paths]


def pattern(size: int) -> bytes:
    """What the app's /bytes/N and /stream/N send."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.mark.parametrize("socket_kind", ["tcp", "unix"])
async def test_get_over_tcp_and_unix_sockets(
    start_proxy, socket_kind: str, uwsgi_a: Uwsgi, uwsgi_unix: Uwsgi
) -> None:
    upstream = uwsgi_a if socket_kind == "tcp" else uwsgi_unix
    proxy = await start_proxy(uwsgi_yaml([f'"{upstream.address}"']))
    responses = await get_all(proxy.url, ["/", "/", "/status/404", "/bytes/3"])
    assert [(r.status_code, r.text) for r in responses[:2]] == [
        (200, f"hello from {upstream.name}\n")
    ] * 2
    assert responses[2].status_code == 404
    assert responses[2].text == f"status 404 from {upstream.name}"
    assert responses[3].content == pattern(3)
    (peer,) = proxy.worker.pools["app"].primary
    assert peer.active == 0
    # uWSGI closes after each response: nothing is kept for reuse.
    assert proxy.worker.pools["app"].idle_count == 0


async def test_variables_match_what_gunicorn_gives_the_app(
    start_proxy, uwsgi_a: Uwsgi, gunicorn_a: Gunicorn
) -> None:
    """The same requests, the same app: over uwsgi it sees what it sees over HTTP."""
    via_uwsgi = await start_proxy(uwsgi_yaml([f'"{uwsgi_a.address}"']))
    via_http = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    requests: list[tuple[str, str, dict[str, str], bytes]] = [
        ("GET", "/echo?a=1&b=%20x&a=2", {"X-Custom": "v", "Accept": "a/b"}, b""),
        ("GET", "/echo/caf%C3%A9/%E2%82%AC?q=%C3%A9", {}, b""),
        ("GET", "/echo/a%2Fb/../c", {"X-Forwarded-For": "198.51.100.7"}, b""),
        ("POST", "/echo", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1&b=2"),
        ("DELETE", "/echo", {"Cookie": "a=1", "X-Multi": "one"}, b""),
        ("PUT", "/echo", {}, b""),
    ]
    seen: list[list[Any]] = []
    for proxy in (via_uwsgi, via_http):
        results: list[Any] = []
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for method, target, headers, body in requests:
                response = await client.request(
                    method, target, headers={"Host": "app.example:8080", **headers}, content=body
                )
                assert response.status_code == 200, (method, target, response.text)
                data = response.json()
                cgi = data.pop("cgi")
                data.pop("server")
                data["headers"].pop("user-agent")
                # Each request has its own id; both protocols send it.
                assert data["headers"].pop("x-request-id") == response.headers["x-request-id"]
                results.append((data, cgi))
        seen.append(results)
    for (uwsgi_data, uwsgi_cgi), (http_data, http_cgi) in zip(*seen, strict=True):
        assert uwsgi_data == http_data
        # (gunicorn's SERVER_NAME is its bind address; ours is the name the client asked for.)
        for key in ("SERVER_PROTOCOL", "REMOTE_ADDR", "CONTENT_TYPE", "CONTENT_LENGTH"):
            assert uwsgi_cgi[key] == http_cgi[key], key
    # What the app saw of the non-ASCII path: decoded bytes, as latin-1 (PEP 3333).
    assert seen[0][1][0]["path"] == "/echo/café/€".encode().decode("latin-1")
    assert seen[0][1][0]["query"] == "q=%C3%A9"
    assert seen[0][2][0]["headers"]["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
    cgi = seen[0][0][1]
    assert cgi["REQUEST_URI"] == "/echo?a=1&b=%20x&a=2"
    assert cgi["SERVER_NAME"] == "app.example"
    assert cgi["SERVER_PORT"] == str(via_uwsgi.port)
    assert cgi["REMOTE_ADDR"] == "127.0.0.1"
    assert cgi["REMOTE_PORT"] is not None and int(cgi["REMOTE_PORT"]) > 0
    assert cgi["SERVER_PROTOCOL"] == "HTTP/1.1"


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024])
async def test_post_bodies_in_memory_and_spooled(start_proxy, uwsgi_a: Uwsgi, size: int) -> None:
    # A 16k memory buffer: the large body goes through a temp file.
    proxy = await start_proxy(
        uwsgi_yaml([f'"{uwsgi_a.address}"'], http="client_body_buffer_size: 16k")
    )
    body = os.urandom(size)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        response = await client.post("/echo", content=body)
    assert response.status_code == 200
    data = response.json()
    assert data["body_length"] == size
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert data["cgi"]["CONTENT_LENGTH"] == str(size)


@pytest.mark.parametrize("path", ["/bytes/2000000", "/stream/2000000"])
async def test_large_responses_framed_or_until_close(
    start_proxy, uwsgi_a: Uwsgi, path: str
) -> None:
    proxy = await start_proxy(uwsgi_yaml([f'"{uwsgi_a.address}"']))
    (response,) = await get_all(proxy.url, [path])
    assert response.status_code == 200
    assert response.content == pattern(2_000_000)


async def test_oversized_variables_get_502_without_reaching_uwsgi(
    start_proxy, uwsgi_a: Uwsgi
) -> None:
    proxy = await start_proxy(
        uwsgi_yaml([f'"{uwsgi_a.address}"'], http="client_header_buffer_size: 256k")
    )
    big = {f"x-big-{n}": "v" * 8000 for n in range(9)}  # > 64 KiB of variables
    fits = {f"x-big-{n}": "v" * 8000 for n in range(7)}  # < 64 KiB: uWSGI's --buffer-size
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        refused = await client.get("/echo", headers=big)
        taken = await client.get("/echo", headers=fits)
    assert refused.status_code == 502
    assert taken.status_code == 200
    assert taken.json()["headers"]["x-big-6"] == "v" * 8000
    (peer,) = proxy.worker.pools["app"].primary
    assert peer.fails == 0  # not the peer's fault: it was never contacted
    assert peer.active == 0


async def test_uwsgi_killed_mid_request_gives_502(start_proxy) -> None:
    doomed = start_uwsgi("doomed", processes=1)
    try:
        proxy = await start_proxy(uwsgi_yaml([f'"{doomed.address}"']))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            in_flight = asyncio.create_task(client.get("/sleep/30"))
            (peer,) = proxy.worker.pools["app"].primary
            # The request reached uWSGI (the peer has it in flight and the app sleeps).
            await async_wait_until(lambda: peer.active == 1, what="the request in flight")
            doomed.kill()
            killed = await asyncio.wait_for(in_flight, 15)
            refused = await client.get("/")  # nothing listens any more
    finally:
        doomed.kill()
    assert killed.status_code == 502
    assert refused.status_code == 502
    assert peer.active == 0


async def test_retries_across_two_uwsgi_servers(start_proxy, uwsgi_b: Uwsgi) -> None:
    doomed = start_uwsgi("doomed2", processes=1)
    try:
        proxy = await start_proxy(uwsgi_yaml([f'"{doomed.address}"', f'"{uwsgi_b.address}"']))
        balanced = await get_all(proxy.url, ["/"] * 4)
        # Round robin over both while both live.
        assert (
            sorted(r.text for r in balanced)
            == ["hello from doomed2\n"] * 2 + ["hello from ub\n"] * 2
        )
        doomed.kill()
        after = await get_all(proxy.url, ["/"] * 6)
    finally:
        doomed.kill()
    # The dead one refuses connections: each request it gets goes on to the live one.
    assert [(r.status_code, r.text) for r in after] == [(200, "hello from ub\n")] * 6
    dead_peer, _ = proxy.worker.pools["app"].primary
    assert dead_peer.failed_until > time.monotonic()  # max_fails 1: left out meanwhile


async def test_unreachable_uwsgi_then_live_one(start_proxy, uwsgi_unix: Uwsgi) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = await start_proxy(uwsgi_yaml([f'"{dead}"', f'"{uwsgi_unix.address}"']))
    responses = await get_all(proxy.url, ["/"] * 4)
    assert [(r.status_code, r.text) for r in responses] == [(200, "hello from uunix\n")] * 4


def test_a_raw_uwsgi_answer_without_length_ends_at_close() -> None:
    """uWSGI's own framing, seen on the wire: a status line and no Content-Length."""
    upstream = start_uwsgi("raw", processes=1)
    try:
        packet = encode_packet(
            [
                (b"REQUEST_METHOD", b"GET"),
                (b"PATH_INFO", b"/stream/10"),
                (b"REQUEST_URI", b"/stream/10"),
                (b"QUERY_STRING", b""),
                (b"SERVER_NAME", b"t"),
                (b"SERVER_PORT", b"80"),
                (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            ]
        )
        host, port = upstream.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(packet)
            received = b""
            while chunk := sock.recv(65536):  # ends when uWSGI closes
                received += chunk
    finally:
        upstream.stop()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length" not in head.lower()
    assert body == pattern(10)


async def test_head_and_bodiless_statuses(start_proxy, uwsgi_a: Uwsgi) -> None:
    proxy = await start_proxy(uwsgi_yaml([f'"{uwsgi_a.address}"']))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        head = await client.head("/bytes/10")
        no_content = await client.get("/status/204")
        after = await client.get("/bytes/5")  # the same client connection, still in step
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "10")
    assert (no_content.status_code, no_content.content) == (204, b"")
    assert after.content == pattern(5)


async def test_a_tls_client_is_https_to_the_uwsgi_app(
    start_proxy, uwsgi_a: Uwsgi, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    pair = ca.issue("a.example")
    proxy = await start_proxy(f"""
upstreams:
  app: {{protocol: uwsgi, servers: ["{uwsgi_a.address}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    server_name: [a.example]
    tls: {pair.yaml()}
    locations: [{{path: /, proxy_pass: app}}]
""")
    async with httpx.AsyncClient(verify=ca.client_context(), timeout=TIMEOUT) as client:
        response = await client.get(
            f"https://127.0.0.1:{proxy.port}/echo", extensions={"sni_hostname": "a.example"}
        )
    data = response.json()
    assert data["url_scheme"] == "https"  # uWSGI reads HTTPS=on, and X-Forwarded-Proto
    assert data["headers"]["x-forwarded-proto"] == "https"

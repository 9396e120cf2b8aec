"""TLS termination, in-process: certificates chosen by SNI, the default server's for an
unknown or missing name, 421 for a Host naming another server, plain HTTP to a TLS port,
the handshake timed by client_header_timeout. Certificates come from a CA made here."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gunicorn, Proxy, async_wait_until
from tests.tls_certs import Pair, TestCA, same_certificate, served_certificate

StartProxy = Callable[[str], Any]


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def three_servers(a: Pair, b: Pair, default: Pair, extra: str = "") -> str:
    """a.example, *.b.example and a default server (`_`, listed last) on one address."""
    return f"""
upstreams: {{}}
servers:
  - listen: ["127.0.0.1:0"]
    server_name: [a.example]
    tls: {a.yaml()}
{extra}
    locations: [{{path: /, return: {{status: 200, body: "server a\\n"}}}}]
  - listen: ["127.0.0.1:0"]
    server_name: ["*.b.example"]
    tls: {b.yaml()}
    locations: [{{path: /, return: {{status: 200, body: "server b\\n"}}}}]
  - listen: ["127.0.0.1:0"]
    server_name: [_]
    tls: {default.yaml()}
    locations: [{{path: /, return: {{status: 200, body: "default\\n"}}}}]
"""


async def start_three(start_proxy: StartProxy, ca: TestCA, extra: str = "") -> Proxy:
    pairs = ca.issue("a.example"), ca.issue("*.b.example"), ca.issue("default.example")
    proxy: Proxy = await start_proxy(three_servers(*pairs, extra=extra))
    return proxy


async def get(
    ca: TestCA, port: int, sni: str, host: str | None = None, path: str = "/"
) -> httpx.Response:
    """One request on its own connection (httpx pools connections by address, not SNI)."""
    async with httpx.AsyncClient(verify=ca.client_context(), timeout=10) as client:
        return await client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"host": host or sni},
            extensions={"sni_hostname": sni},
        )


async def test_sni_picks_the_server_and_its_certificate(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)
    # The client checks each certificate against the name it asked for, with the test CA.
    assert (await get(ca, proxy.port, "a.example")).text == "server a\n"
    assert (await get(ca, proxy.port, "x.b.example")).text == "server b\n"
    assert (await get(ca, proxy.port, "default.example")).text == "default\n"
    response = await get(ca, proxy.port, "a.example")
    assert response.http_version == "HTTP/1.1"


async def test_unknown_or_missing_sni_gets_the_default_servers_certificate(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)
    default = (ca.dir / "default.example.pem").read_bytes()  # the leaf comes first
    a = (ca.dir / "a.example.pem").read_bytes()
    for sni in (None, "unknown.example", "b.example"):  # *.b.example does not cover b.example
        served = await asyncio.to_thread(served_certificate, proxy.port, sni)
        assert same_certificate(served, default), sni
    served = await asyncio.to_thread(served_certificate, proxy.port, "A.Example")
    assert same_certificate(served, a)


async def test_a_host_naming_another_server_than_sni_chose_gets_421(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)
    misdirected = await get(ca, proxy.port, "a.example", host="x.b.example")
    assert misdirected.status_code == 421
    assert "server b" not in misdirected.text
    assert (await get(ca, proxy.port, "x.b.example", host="a.example:443")).status_code == 421
    # An unknown name chose the default server: a Host naming another is misdirected too.
    assert (await get_unverified(proxy.port, "nobody.example", "a.example")).status_code == 421
    # The server SNI chose answers for its own names, and for a Host naming no server.
    assert (await get(ca, proxy.port, "a.example", host="A.example:443")).text == "server a\n"
    assert (await get(ca, proxy.port, "a.example", host="nobody.example")).text == "server a\n"


async def get_unverified(port: int, sni: str, host: str) -> httpx.Response:
    """As `get`, for a name no certificate here covers (so not verified)."""
    async with httpx.AsyncClient(verify=False, timeout=10) as client:
        return await client.get(
            f"https://127.0.0.1:{port}/", headers={"host": host}, extensions={"sni_hostname": sni}
        )


async def test_a_failed_handshake_closes_quietly(
    start_proxy: StartProxy, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_three(start_proxy, ca)
    garbage = b"\x16\x03\x01\x00\x10" + b"not a client hello"
    with caplog.at_level(logging.DEBUG):
        elapsed = await asyncio.to_thread(closed_after, proxy.port, garbage)
        assert elapsed < 5  # refused at once, not left to time out
        assert (await get(ca, proxy.port, "a.example")).status_code == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def tls_session(port: int, ca: TestCA, sni: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ca.client_context().wrap_socket(raw, server_hostname=sni)


async def test_an_http10_request_without_host_goes_to_the_server_sni_chose(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)

    def exchange() -> bytes:
        with tls_session(proxy.port, ca, "x.b.example") as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    data = await asyncio.to_thread(exchange)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"server b\n")


def plain_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


async def test_plain_http_to_a_tls_port_gets_a_plain_400_and_is_closed(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)
    request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    data = await asyncio.to_thread(plain_request, proxy.port, request)  # returns: closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert b"The plain HTTP request was sent to HTTPS port" in body
    assert f"Content-Length: {len(body)}".encode() in head
    # The port still speaks TLS to the next client.
    assert (await get(ca, proxy.port, "a.example")).status_code == 200


async def test_the_plain_400_survives_a_body_still_arriving(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    proxy = await start_three(start_proxy, ca)
    chunk, chunks = b"x" * 65536, 100

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            length = len(chunk) * chunks
            sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length)
            readable, _, _ = select.select([sock], [], [], 10)  # the answer is there
            assert readable
            # The body goes on arriving after the answer: a server that closed at once
            # resets the connection (these sends fail, and the unread answer is lost).
            for _ in range(chunks):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while part := sock.recv(65536):
                data += part
            return data

    data = await asyncio.to_thread(send)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"</html>\r\n")


def closed_after(port: int, first: bytes) -> float:
    """Send `first`, then nothing: seconds until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        if first:
            sock.sendall(first)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - started


@pytest.mark.parametrize("first", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "half-hello"])
async def test_the_handshake_counts_against_client_header_timeout(
    start_proxy: StartProxy, ca: TestCA, first: bytes
) -> None:
    # Set on the default server (the handshake comes before any Host).
    pairs = ca.issue("a.example"), ca.issue("*.b.example"), ca.issue("default.example")
    text = three_servers(*pairs).replace(
        "    server_name: [_]\n", "    server_name: [_]\n    client_header_timeout: 1s\n"
    )
    proxy = await start_proxy(text)
    elapsed = await asyncio.to_thread(closed_after, proxy.port, first)
    assert 0.5 < elapsed < 5  # closed by the timeout (1s), not by the client's 10s


async def test_tls_versions_and_alpn(start_proxy: StartProxy, ca: TestCA) -> None:
    proxy = await start_three(start_proxy, ca)

    def handshake(maximum: ssl.TLSVersion) -> tuple[str | None, str | None]:
        context = ca.client_context()
        context.maximum_version = maximum
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="a.example") as sock:
            return sock.version(), sock.selected_alpn_protocol()

    assert await asyncio.to_thread(handshake, ssl.TLSVersion.TLSv1_3) == ("TLSv1.3", "http/1.1")
    assert await asyncio.to_thread(handshake, ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", "http/1.1")


async def test_a_proxy_protocol_header_comes_before_the_handshake(
    start_proxy: StartProxy, ca: TestCA, gunicorn_a: Gunicorn
) -> None:
    pair = ca.issue("a.example")
    proxy = await start_proxy(f"""
upstreams:
  app: {{servers: ["{gunicorn_a.address}"]}}
servers:
  - listen: [{{address: "127.0.0.1:0", proxy_protocol: true}}]
    server_name: [a.example]
    tls: {pair.yaml()}
    locations: [{{path: /, proxy_pass: app}}]
""")

    def exchange() -> bytes:
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        raw.sendall(b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 443\r\n")
        with ca.client_context().wrap_socket(raw, server_hostname="a.example") as sock:
            sock.sendall(b"GET /echo HTTP/1.0\r\nHost: a.example\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    head, _, body = (await asyncio.to_thread(exchange)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    headers = json.loads(body)["headers"]
    assert headers["x-real-ip"] == "198.51.100.9"
    assert headers["x-forwarded-proto"] == "https"


async def test_the_redirect_to_https_server_is_two_lines(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("""
upstreams: {}
servers:
  - listen: ["127.0.0.1:0"]
    locations: [{path: /, return: {status: 301, location: "https://$host$request_uri"}}]
""")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{proxy.url}/a/b%20c?x=1&y=2", headers={"host": "Shop.Example:8080"}
        )
    assert response.status_code == 301
    assert response.headers["location"] == "https://shop.example/a/b%20c?x=1&y=2"


async def test_return_variables_in_body_and_location(start_proxy: StartProxy, ca: TestCA) -> None:
    pair = ca.issue("a.example")
    body = "$scheme $host $request_uri; $scheme\\n"
    proxy = await start_proxy(f"""
upstreams: {{}}
servers:
  - listen: ["127.0.0.1:0"]
    server_name: [a.example]
    tls: {pair.yaml()}
    locations:
      - {{path: /moved, return: {{status: 302, location: "$scheme://$host/new"}}}}
      - {{path: /, return: {{status: 200, body: "{body}"}}}}
""")
    response = await get(ca, proxy.port, "a.example", host="a.example:8443", path="/p?q=1")
    assert response.text == "https a.example /p?q=1; https\n"
    assert response.headers["content-type"].startswith("text/plain")
    moved = await get(ca, proxy.port, "a.example", path="/moved")
    assert (moved.status_code, moved.headers["location"]) == (302, "https://a.example/new")

    def http10_without_host() -> bytes:
        with tls_session(proxy.port, ca, "a.example") as sock:
            sock.sendall(b"GET /x HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    data = await asyncio.to_thread(http10_without_host)
    assert data.endswith(b"\r\n\r\nhttps a.example /x; https\n")  # $host: the server's name


async def test_handshakes_count_against_worker_connections(
    start_proxy: StartProxy, ca: TestCA
) -> None:
    pairs = ca.issue("a.example"), ca.issue("*.b.example"), ca.issue("default.example")
    proxy = await start_proxy("worker_connections: 2\n" + three_servers(*pairs))
    silent = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(2)]
    try:
        # Neither has sent a byte: still they are the worker's two connections, and it
        # stops accepting (it would go on, a handshake at a time, if they were not counted).
        await async_wait_until(lambda: proxy.worker.gate.paused, 5, "the gate to pause")
        assert len(proxy.worker.connections) == 2
        silent.pop().close()
        await async_wait_until(lambda: not proxy.worker.gate.paused, 5, "the gate to resume")
        assert (await get(ca, proxy.port, "a.example")).text == "server a\n"
    finally:
        for sock in silent:
            sock.close()

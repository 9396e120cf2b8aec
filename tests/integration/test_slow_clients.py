"""Why edgeproxy exists: slow clients must not hold a WSGI worker.

The upstream is gunicorn with ONE sync worker. Alone, it would be blocked by a client that
sends half a request or reads its response slowly; behind edgeproxy, a second client is
served at once in both cases.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from edgeproxy.upstream.connection import UpstreamConnection
from tests.conftest import Gunicorn, async_wait_until, start_gunicorn
from tests.integration.fake_upstreams import (
    pattern_sha256,
    proxy_yaml,
    temp_fds,
    temp_file_sizes,
)
from tests.integration.raw_http import read_response


@pytest.fixture(scope="module")
def gunicorn_single() -> Iterator[Gunicorn]:
    upstream = start_gunicorn("single", workers=1)
    yield upstream
    upstream.stop()


async def served_at_once(url: str) -> None:
    """A second client gets its answer from the single worker within a short deadline."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(5.0)) as client:
        response = await asyncio.wait_for(client.get("/"), 5)
    assert response.status_code == 200
    assert response.text == "hello from single\n"


async def test_half_sent_request_does_not_hold_the_worker(
    start_proxy, gunicorn_single: Gunicorn
) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_single.address}"']))
    (peer,) = proxy.worker.pools["app"].primary
    declared = 100_000
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: %d\r\n\r\n" % declared
            + b"a" * 1000
        )
        await writer.drain()
        # The proxy is still reading this body; gunicorn must not have been contacted.
        for _ in range(3):
            await served_at_once(proxy.url)
        assert peer.active == 0
        # The slow client finishes: its request goes through whole.
        writer.write(b"a" * (declared - 1000))
        response = await read_response(reader, timeout=10)
        assert (response.version, response.status) == ("HTTP/1.1", 200)
        echo = json.loads(response.body)
        assert echo["body_length"] == declared
        assert echo["body_sha256"] == hashlib.sha256(b"a" * declared).hexdigest()
    finally:
        writer.close()


async def test_slow_reader_does_not_hold_the_worker(start_proxy, gunicorn_single: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_single.address}"']))
    (peer,) = proxy.worker.pools["app"].primary
    size = 5 * 1024 * 1024
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", proxy.port)), 5)
        await loop.sock_sendall(sock, b"GET /bytes/%d HTTP/1.1\r\nhost: test\r\n\r\n" % size)
        received = bytearray()
        while len(received) < 8192:  # read a few KB, then stop reading
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            assert chunk, "the proxy closed the connection"
            received += chunk
        # gunicorn's answer is all in the proxy already and its worker is free...
        await async_wait_until(lambda: peer.active == 0, 10, "the upstream to be released")
        assert temp_fds(proxy.temp_path), "5 MB should be spooled to a temp file"
        # ...so a second client is served while the first has read almost nothing.
        await served_at_once(proxy.url)
        assert len(received) < size // 2
        # The slow client now reads the rest, intact.
        head_end = received.find(b"\r\n\r\n")
        assert head_end > 0
        while len(received) < head_end + 4 + size:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
            assert chunk, "the proxy closed the connection mid-body"
            received += chunk
    finally:
        sock.close()
    head = bytes(received[:head_end])
    body = bytes(received[head_end + 4 :])
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: %d" % size in head.lower()
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 5, "temp files closed")


def upstream_reading_paused() -> bool:
    """Whether some live upstream connection of this process has stopped reading (flow control)."""
    return any(
        not conn.transport.is_reading()
        for conn in gc.get_objects()
        if isinstance(conn, UpstreamConnection) and not conn.closed and conn.transport is not None
    )


@pytest.mark.parametrize(
    "http",
    ["proxy_max_temp_file_size: 1m", "proxy_buffering: false"],
    ids=["temp-file-cap", "unbuffered"],
)
async def test_slow_reader_past_the_buffers_holds_the_upstream(
    start_proxy, gunicorn_single: Gunicorn, http: str
) -> None:
    # The other side of the trade-off: beyond proxy_max_temp_file_size (or with buffering
    # off) the proxy stops reading the upstream until the client catches up.
    proxy = await start_proxy(
        proxy_yaml([f'"{gunicorn_single.address}"'], http=f"proxy_buffers_size: 64k\n{http}")
    )
    (peer,) = proxy.worker.pools["app"].primary
    size = 64 * 1024 * 1024  # more than loopback kernel buffers hold (tcp_rmem up to 32 MiB)
    digest = hashlib.sha256()
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=httpx.Timeout(30.0)) as client,
        client.stream("GET", f"/bytes/{size}") as response,
    ):
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), 10)
        digest.update(first)
        await async_wait_until(
            lambda: upstream_reading_paused() or peer.active == 0, 10, "the proxy to stop reading"
        )
        spooled = temp_file_sizes(proxy.temp_path)
        assert peer.active == 1, "the whole response was read: the temp file cap was ignored"
        assert all(length <= 1024 * 1024 + 256 * 1024 for length in spooled), spooled
        if "buffering: false" in http:
            assert not spooled
        received = len(first)
        async for chunk in chunks:
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)

"""Upstream failures through real sockets: dead, stalled, unreachable and misbehaving peers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from edgeproxy.server.proxy import ProxyExchange
from tests.conftest import Gunicorn, async_wait_until, free_port
from tests.integration.fake_upstreams import RawUpstream, proxy_yaml, read_request, response

TIMEOUT = httpx.Timeout(30.0)


async def fetch_statuses(url: str, count: int, path: str = "/") -> list[tuple[int, str]]:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        results = []
        for _ in range(count):
            answer = await asyncio.wait_for(client.get(path), 15)
            results.append((answer.status_code, answer.text))
        return results


async def stall(
    up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Take the request, never answer."""
    await read_request(reader)
    await asyncio.Event().wait()


async def test_dead_peer_is_retried_on_the_live_one(start_proxy, gunicorn_a: Gunicorn) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = await start_proxy(
        proxy_yaml([f'"{dead}"', f'"{gunicorn_a.address}"'], upstream="next_upstream: [error]")
    )
    results = await fetch_statuses(proxy.url, 6)
    assert results == [(200, "hello from a\n")] * 6
    (dead_peer, _) = proxy.worker.pools["app"].primary
    assert dead_peer.failed_until > time.monotonic()  # max_fails 1: out of rotation


async def test_dead_peer_without_retry_fails_once(start_proxy, gunicorn_a: Gunicorn) -> None:
    dead = f"127.0.0.1:{free_port()}"
    peers = [
        f'{{address: "{dead}", max_fails: 1, fail_timeout: 10s}}',
        f'{{address: "{gunicorn_a.address}", max_fails: 1, fail_timeout: 10s}}',
    ]
    proxy = await start_proxy(proxy_yaml(peers, upstream="next_upstream: off"))
    statuses = [status for status, _ in await fetch_statuses(proxy.url, 8)]
    # Round robin starts with the dead peer: that request fails, then it is left out.
    assert statuses == [502] + [200] * 7


async def test_lone_dead_peer_gives_502_quickly(start_proxy) -> None:
    proxy = await start_proxy(proxy_yaml([f'"127.0.0.1:{free_port()}"']))
    started = time.monotonic()
    statuses = [status for status, _ in await fetch_statuses(proxy.url, 3)]
    assert statuses == [502, 502, 502]
    assert time.monotonic() - started < 5


async def test_read_timeout_gives_504(start_proxy) -> None:
    async with RawUpstream(stall) as upstream:
        proxy = await start_proxy(
            proxy_yaml([f'"{upstream.address}"'], upstream="read_timeout: 500ms")
        )
        started = time.monotonic()
        ((status, _),) = await fetch_statuses(proxy.url, 1)
        elapsed = time.monotonic() - started
    assert status == 504
    assert 0.4 < elapsed < 5
    assert upstream.accepted == 1


@contextmanager
def unanswered_listener() -> Iterator[int]:
    """The port of a listener that never accepts, its backlog already full: further SYNs
    are dropped, so a connect to it hangs until the proxy's connect_timeout."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(listener.getsockname())
        except TimeoutError:
            pass
        else:
            pytest.skip("a full backlog does not hold off connects on this system")
        finally:
            probe.close()
        yield listener.getsockname()[1]


async def test_connect_timeout_gives_504(start_proxy) -> None:
    with unanswered_listener() as port:
        proxy = await start_proxy(
            proxy_yaml([f'"127.0.0.1:{port}"'], upstream="connect_timeout: 300ms")
        )
        started = time.monotonic()
        ((status, _),) = await fetch_statuses(proxy.url, 1)
        elapsed = time.monotonic() - started
    assert status == 504
    assert 0.25 < elapsed < 5


async def test_client_leaving_while_connecting_cancels_the_connect(start_proxy) -> None:
    """The connect is cancelled, not turned into a timeout (which would be retried and
    counted as a failure of the peer), and nothing is left behind."""
    with unanswered_listener() as port:
        proxy = await start_proxy(
            proxy_yaml([f'"127.0.0.1:{port}"'], upstream="connect_timeout: 30s")
        )
        (peer,) = proxy.worker.pools["app"].primary
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        await async_wait_until(
            lambda: proxy.worker.pools["app"].waiting(peer) == 1, 10, "a request connecting"
        )
        (client,) = proxy.worker.connections
        exchange = client.responder
        assert isinstance(exchange, ProxyExchange)
        connecting = exchange.connecting
        assert connecting is not None
        # A reset, not a FIN: a FIN after a request is a half-close, and is answered.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        await async_wait_until(lambda: connecting.outcome != "", 10, "the connect ended")
        assert connecting.outcome == "cancelled"
        assert not proxy.worker.pools["app"].waiting(peer) and peer.active == 0 and peer.fails == 0
        await async_wait_until(lambda: not proxy.worker.connections, 10, "the client gone")


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ncontent-len",  # closed inside the head
        b"",  # closed without a byte
    ],
    ids=["garbage", "bad-length", "two-lengths", "truncated-head", "empty"],
)
async def test_malformed_response_gives_502(start_proxy, answer: bytes) -> None:
    async def misbehave(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        up.requests += 1
        writer.write(answer)
        await writer.drain()

    async with RawUpstream(misbehave) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"']))
        results = await fetch_statuses(proxy.url, 2)
    assert [status for status, _ in results] == [502, 502]
    assert upstream.requests == 2


@pytest.mark.parametrize(
    ("answer", "then"),
    [
        (b"content-length: 100000\r\n\r\n" + b"x" * 1000, "close"),
        (b"content-length: 100000\r\n\r\n" + b"x" * 1000, "stall"),
        (b"transfer-encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n", "close"),
    ],
    ids=["length-close", "length-stall", "chunked-close"],
)
async def test_body_broken_midway_closes_the_client_connection(
    start_proxy, answer: bytes, then: str
) -> None:
    async def short_body(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + answer)
        await writer.drain()
        if then == "stall":
            await reader.read()

    async with RawUpstream(short_body) as upstream:
        proxy = await start_proxy(
            proxy_yaml([f'"{upstream.address}"'], upstream="read_timeout: 300ms")
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        received = b""
        try:
            writer.write(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            with pytest.raises(asyncio.IncompleteReadError) as closed:
                # Bounded: a proxy that keeps the connection open fails here by timeout.
                while len(received) < 200_000:
                    received += await asyncio.wait_for(reader.readexactly(1), 10)
            received += closed.value.partial
        except ConnectionResetError:
            pass  # an abort may reach us as a reset: also a close
        finally:
            writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if b"content-length" in answer:
        assert b"content-length: 100000" in head.lower()
        assert body == b"x" * 1000
    else:
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"x" * 1000 in body
        assert not body.endswith(b"0\r\n\r\n")  # no last chunk: the client sees the break


async def test_next_upstream_http_503(start_proxy, gunicorn_a: Gunicorn) -> None:
    async def unavailable(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await read_request(reader) is not None:
            up.requests += 1
            writer.write(response(503, b"busy"))
            await writer.drain()

    async with RawUpstream(unavailable) as upstream:
        proxy = await start_proxy(
            proxy_yaml(
                [f'"{upstream.address}"', f'"{gunicorn_a.address}"'],
                upstream="next_upstream: [error, timeout, http_503]",
            )
        )
        results = await fetch_statuses(proxy.url, 4)
    assert results == [(200, "hello from a\n")] * 4
    assert upstream.requests == 1  # tried first, then out of rotation (max_fails 1)


@pytest.mark.parametrize("next_upstream", ["[error, timeout]", "[error, timeout, http_503]"])
@pytest.mark.parametrize("peers", [1, 2])
async def test_last_503_passes_through(start_proxy, next_upstream: str, peers: int) -> None:
    # Nowhere (else) to go: the client gets the upstream's own answer, Retry-After and all,
    # as with nginx, not a page of ours.
    async def unavailable(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await read_request(reader) is not None:
            up.requests += 1
            writer.write(response(503, b"busy", b"retry-after: 7\r\n"))
            await writer.drain()

    async with RawUpstream(unavailable) as one, RawUpstream(unavailable) as two:
        addresses = [f'"{one.address}"', f'"{two.address}"'][:peers]
        proxy = await start_proxy(proxy_yaml(addresses, upstream=f"next_upstream: {next_upstream}"))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            answer = await asyncio.wait_for(client.get("/"), 10)
    assert (answer.status_code, answer.text) == (503, "busy")
    assert answer.headers["retry-after"] == "7"
    retried = "http_503" in next_upstream
    assert one.requests + two.requests == (peers if retried else 1)


async def test_retry_resends_a_spooled_body(start_proxy, gunicorn_a: Gunicorn) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = await start_proxy(
        proxy_yaml(
            [f'"{dead}"', f'"{gunicorn_a.address}"'],
            upstream="next_upstream: [error]",
            http="client_body_buffer_size: 16k",
        )
    )
    body = os.urandom(300_000)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        # A failed connect never sent anything, so even a POST goes to the next peer.
        response = await asyncio.wait_for(client.post("/echo", content=body), 15)
    assert response.status_code == 200
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_timeout_retries_get_but_not_post(start_proxy, gunicorn_a: Gunicorn) -> None:
    async with RawUpstream(stall) as upstream:
        peers = [f'"{upstream.address}"', f'"{gunicorn_a.address}"']
        config = proxy_yaml(peers, upstream="read_timeout: 300ms\nnext_upstream: [error, timeout]")
        # Two fresh proxies, so that each first request starts at the stalled peer.
        for method, expected in (("GET", 200), ("POST", 504)):
            proxy = await start_proxy(config)
            async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
                answer = await asyncio.wait_for(client.request(method, "/", content=b"x"), 15)
            # A POST may have reached the peer before it timed out: it is never replayed.
            assert answer.status_code == expected, method
    assert upstream.accepted == 2


async def test_backup_peer_serves_when_the_primary_is_down(
    start_proxy, gunicorn_a: Gunicorn
) -> None:
    peers = [f'"127.0.0.1:{free_port()}"', f'{{address: "{gunicorn_a.address}", backup: true}}']
    proxy = await start_proxy(proxy_yaml(peers))
    results = await fetch_statuses(proxy.url, 3)
    assert results == [(200, "hello from a\n")] * 3


async def test_stale_keepalive_connection_is_retried_on_a_fresh_one(start_proxy) -> None:
    async def drops_second_request(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Connection 1 answers once, then closes on the next request without an answer,
        # as a server whose keep-alive timer fired just as the request was sent.
        first_connection = up.accepted == 1
        while await read_request(reader) is not None:
            up.requests += 1
            if first_connection and up.requests == 2:
                return
            writer.write(response())
            await writer.drain()

    async with RawUpstream(drops_second_request) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"']))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            first = await asyncio.wait_for(client.get("/"), 10)
            second = await asyncio.wait_for(client.post("/", content=b"x"), 10)
    assert (first.status_code, second.status_code) == (200, 200)
    assert upstream.accepted == 2
    assert upstream.requests == 3


async def test_failed_peer_returns_after_fail_timeout(start_proxy, gunicorn_a: Gunicorn) -> None:
    port = free_port()
    peers = [f'{{address: "127.0.0.1:{port}", fail_timeout: 300ms}}', f'"{gunicorn_a.address}"']
    proxy = await start_proxy(proxy_yaml(peers))
    assert await fetch_statuses(proxy.url, 2) == [(200, "hello from a\n")] * 2
    (revived, _) = proxy.worker.pools["app"].primary
    assert revived.failed_until > 0
    server = await asyncio.start_server(lambda r, w: handle_ok(r, w), "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for _ in range(500):  # bounded; the deadline below ends it sooner
                if (await asyncio.wait_for(client.get("/"), 10)).text == "ok":
                    break
                assert time.monotonic() < revived.failed_until + 5, "the peer never came back"
            else:
                raise AssertionError("the peer never came back")
    finally:
        server.close()


async def handle_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await read_request(reader) is not None:
            writer.write(response())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_max_conns_caps_requests_in_flight(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'{{address: "{gunicorn_a.address}", max_conns: 1}}']))
    (peer,) = proxy.worker.pools["app"].primary
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        slow = asyncio.create_task(client.get("/sleep/0.5"))
        try:
            await async_wait_until(lambda: peer.active == 1, 5, "the first request upstream")
            # The only peer is at its cap: refused at once rather than queued.
            assert (await asyncio.wait_for(client.get("/"), 5)).status_code == 502
            assert (await asyncio.wait_for(slow, 10)).text == "slept"
        finally:
            slow.cancel()
        assert (await client.get("/")).status_code == 200


async def test_read_timeout_counts_from_the_end_of_the_request(start_proxy) -> None:
    # An upstream that takes the first 12 MB of a big body in bursts with pauses (each far
    # below read_timeout, all of them far above it), then the rest at once, is not timed
    # out: read_timeout runs from the end of the request. (The tail is read at once so that
    # what the kernel buffers after our last write does not count against read_timeout.)
    took: list[float] = []

    async def slow_start(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        started = time.monotonic()
        for _ in range(6):
            length -= len(await reader.readexactly(2 * 1024 * 1024))
            await asyncio.sleep(0.15)  # a slow app, not a wait for the test's sake
        took.append(time.monotonic() - started)
        await reader.readexactly(length)
        writer.write(response())
        await writer.drain()

    async with RawUpstream(slow_start) as upstream:
        proxy = await start_proxy(
            proxy_yaml([f'"{upstream.address}"'], upstream="read_timeout: 500ms")
        )
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            answer = await asyncio.wait_for(client.post("/", content=b"x" * 24_000_000), 20)
    assert (answer.status_code, answer.text) == (200, "ok")
    assert took[0] > 0.85


async def test_a_client_that_resets_cuts_the_upstream_exchange_short(start_proxy) -> None:
    # The upstream takes its time; the client gives up and resets the connection. The proxy
    # notices at once (it keeps reading the client while the request is away) and closes
    # the upstream connection, long before read_timeout, instead of waiting for an answer
    # nobody reads. (A FIN is a half-close: that client still gets its answer.)
    got_request = asyncio.Event()

    async def never_answers(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        got_request.set()
        await reader.read()  # returns at EOF: when the proxy closes its side

    async with RawUpstream(never_answers) as upstream:
        proxy = await start_proxy(
            proxy_yaml([f'"{upstream.address}"'], upstream="read_timeout: 60s")
        )
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(got_request.wait(), 10)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # linger 0: the close is a reset
        await async_wait_until(lambda: upstream.open == 0, 10, "the upstream connection closed")
        (peer,) = proxy.worker.pools["app"].primary
        assert peer.active == 0  # the slot is released, not leaked
        assert not proxy.worker.connections

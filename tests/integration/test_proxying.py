"""Proxying through real sockets to real gunicorn: bodies, spooling, balancing, keep-alive."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Gunicorn, async_wait_until
from tests.integration.fake_upstreams import (
    RawUpstream,
    keep_alive_ok,
    pattern_sha256,
    proxy_yaml,
    read_request,
    response,
    temp_fds,
)

TIMEOUT = httpx.Timeout(30.0)


def server_name(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.text.removeprefix("hello from ").strip()


@pytest.mark.parametrize("size", [1000, 300_000], ids=["memory", "disk"])
@pytest.mark.parametrize("upstream", ["gunicorn_a", "gunicorn_unix"], ids=["tcp", "unix"])
async def test_methods_and_bodies(
    start_proxy, request: pytest.FixtureRequest, upstream: str, size: int
) -> None:
    gunicorn: Gunicorn = request.getfixturevalue(upstream)
    proxy = await start_proxy(
        proxy_yaml([f'"{gunicorn.address}"'], http="client_body_buffer_size: 16k")
    )
    body = os.urandom(size)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        for method in ("GET", "POST", "PUT"):
            response = await client.request(method, "/echo?x=1", content=body)
            assert response.status_code == 200
            echo = response.json()
            assert echo["server"] == gunicorn.name
            assert echo["method"] == method
            assert echo["query"] == "x=1"
            assert echo["body_length"] == size
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
        response = await client.get("/echo")
        assert response.json()["body_length"] == 0
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 5, "temp files closed")


async def test_large_upload_spools_to_a_temp_file(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    block = os.urandom(1 << 20)
    blocks = 50
    paused = asyncio.Event()
    resume = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        for index in range(blocks):
            yield block
            if index == 1:
                paused.set()
                await resume.wait()

    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        task = asyncio.create_task(client.post("/echo", content=upload()))
        try:
            await asyncio.wait_for(paused.wait(), 10)
            # The first 2 MB are in; the proxy must hold them in a temp file, not in memory.
            await async_wait_until(lambda: temp_fds(proxy.temp_path), 10, "a spooled body")
            resume.set()
            response = await asyncio.wait_for(task, 60)
        finally:
            resume.set()
            task.cancel()
    assert response.status_code == 200
    echo = response.json()
    assert echo["body_length"] == blocks * len(block)
    assert echo["body_sha256"] == hashlib.sha256(block * blocks).hexdigest()
    assert echo["headers"]["content-length"] == str(blocks * len(block))
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 5, "temp files closed")


async def test_large_response_spools_and_frees_the_upstream(
    start_proxy, gunicorn_a: Gunicorn
) -> None:
    proxy = await start_proxy(
        proxy_yaml([f'"{gunicorn_a.address}"'], http="proxy_buffers_size: 64k")
    )
    size = 64 * 1024 * 1024  # more than loopback kernel buffers hold (tcp_rmem up to 32 MiB)
    (peer,) = proxy.worker.pools["app"].primary
    digest = hashlib.sha256()
    received = 0
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client,
        client.stream("GET", f"/bytes/{size}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), 10)
        digest.update(first)
        received += len(first)
        # We stopped reading: the proxy still reads gunicorn's answer at full speed, into a
        # temp file, and hands the upstream connection back before we have the body.
        await async_wait_until(lambda: peer.active == 0, 10, "the upstream to be released")
        assert temp_fds(proxy.temp_path)
        async for chunk in chunks:
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 5, "temp files closed")


async def test_stream_without_content_length(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    size = 3 * 1024 * 1024 + 17
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        response = await client.get(f"/stream/{size}")
    assert response.status_code == 200
    assert len(response.content) == size
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)


async def test_round_robin_follows_weights(
    start_proxy, gunicorn_a: Gunicorn, gunicorn_b: Gunicorn
) -> None:
    proxy = await start_proxy(
        proxy_yaml(
            [
                f'{{address: "{gunicorn_a.address}", weight: 3}}',
                f'{{address: "{gunicorn_b.address}", weight: 1}}',
            ],
            upstream="balance: round_robin",
        )
    )
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        names = [server_name(await client.get("/")) for _ in range(40)]
    # Smooth weighted round robin is deterministic: exactly 3:1, interleaved.
    assert Counter(names) == {"a": 30, "b": 10}
    assert all(names[i : i + 4].count("b") == 1 for i in range(0, 40, 4))


async def test_least_conn_prefers_the_idle_server(
    start_proxy, gunicorn_a: Gunicorn, gunicorn_b: Gunicorn
) -> None:
    proxy = await start_proxy(
        proxy_yaml(
            [f'"{gunicorn_a.address}"', f'"{gunicorn_b.address}"'], upstream="balance: least_conn"
        )
    )
    peers = proxy.worker.pools["app"].primary
    names = {gunicorn_a.address: "a", gunicorn_b.address: "b"}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        slow = asyncio.create_task(client.get("/sleep/1"))
        try:
            await async_wait_until(lambda: any(p.active for p in peers), 5, "a busy peer")
            (busy,) = [p for p in peers if p.active]
            idle = "b" if names[busy.name] == "a" else "a"
            served = [server_name(await client.get("/")) for _ in range(6)]
            assert served == [idle] * 6
            assert busy.active == 1  # the sleep was still running throughout
            assert (await asyncio.wait_for(slow, 10)).text == "slept"
        finally:
            slow.cancel()


@pytest.mark.parametrize("balance", ["ip_hash", "random_two"])
async def test_other_balancers(
    start_proxy, gunicorn_a: Gunicorn, gunicorn_b: Gunicorn, balance: str
) -> None:
    proxy = await start_proxy(
        proxy_yaml(
            [f'"{gunicorn_a.address}"', f'"{gunicorn_b.address}"'], upstream=f"balance: {balance}"
        )
    )
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        names = Counter([server_name(await client.get("/")) for _ in range(30)])
    if balance == "ip_hash":
        assert len(names) == 1  # one client address, one server
    else:
        assert set(names) == {"a", "b"}  # all on one: chance 2**-29


async def test_upstream_keepalive_off_closes_each_connection(start_proxy) -> None:
    heads: list[bytes] = []

    async def record(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (head := await read_request(reader)) is not None:
            heads.append(head.lower())
            writer.write(response())
            await writer.drain()

    async with RawUpstream(record) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"'], upstream="keepalive: 0"))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for _ in range(3):
                assert (await client.get("/")).text == "ok"
        await async_wait_until(lambda: upstream.open == 0, 5, "upstream connections closed")
    assert upstream.accepted == 3
    assert all(b"\r\nconnection: close\r\n" in head for head in heads)


async def test_upstream_keepalive_reuses_and_expires_connections(start_proxy) -> None:
    async with RawUpstream(keep_alive_ok) as upstream:
        proxy = await start_proxy(
            proxy_yaml([f'"{upstream.address}"'], upstream="keepalive: 4\nkeepalive_timeout: 300ms")
        )
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for _ in range(5):
                response = await client.get("/")
                assert response.status_code == 200
                assert response.text == "ok"
            assert upstream.requests == 5
            assert upstream.accepted == 1
            # Idle past keepalive_timeout: the proxy closes it without being asked.
            await async_wait_until(lambda: upstream.open == 0, 5, "the idle connection closed")
            assert (await client.get("/")).text == "ok"
            assert upstream.accepted == 2


@pytest.mark.parametrize("buffering", [False, True], ids=["unbuffered", "buffered"])
async def test_response_streams_as_the_upstream_sends(start_proxy, buffering: bool) -> None:
    first_sent = asyncio.Event()
    release = asyncio.Event()

    async def in_two_parts(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()
        first_sent.set()
        await release.wait()
        writer.write(b"world")
        await writer.drain()
        await read_request(reader)

    async with RawUpstream(in_two_parts) as upstream:
        proxy = await start_proxy(
            proxy_yaml(
                [f'"{upstream.address}"'],
                http=f"proxy_buffering: {'true' if buffering else 'false'}",
            )
        )
        async with (
            httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client,
            client.stream("GET", "/") as response,
        ):
            assert response.status_code == 200
            chunks = response.aiter_raw()
            if buffering:
                await asyncio.wait_for(first_sent.wait(), 10)
                release.set()
                body = b"".join([chunk async for chunk in chunks])
            else:
                # The first half reaches us while the upstream is still holding the rest.
                body = await asyncio.wait_for(anext(chunks), 10)
                assert body == b"hello"
                release.set()
                async for chunk in chunks:
                    body += chunk
    assert body == b"helloworld"


async def test_head_request_keeps_the_connection_usable(start_proxy, gunicorn_a: Gunicorn) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        response = await client.head("/bytes/1000")
        assert response.status_code == 200
        assert response.headers["content-length"] == "1000"
        assert response.content == b""
        assert (await client.get("/")).text == "hello from a\n"


async def test_client_gone_mid_response_releases_upstream_and_temp_file(
    start_proxy, gunicorn_a: Gunicorn
) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    (peer,) = proxy.worker.pools["app"].primary
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client,
        # Larger than what loopback kernel buffers can hold (tcp_rmem max is 32 MiB on some
        # machines), so the client's not reading surely leaves part of it in the spool.
        client.stream("GET", f"/bytes/{64 * 1024 * 1024}") as response,
    ):
        # Held for the whole block: a dropped body iterator is finalized by the loop, which
        # closes the response, and with it the connection, as soon as the loop gets to it
        # (this test was flaky on busy machines while it dropped the iterator).
        chunks = response.aiter_raw()
        await asyncio.wait_for(anext(chunks), 10)
        await async_wait_until(lambda: temp_fds(proxy.temp_path), 20, "a spooled response")
        assert proxy.worker.connections  # the client is still there, not reading
    # Leaving the block closed the half-read connection.
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 10, "temp file closed")
    await async_wait_until(lambda: peer.active == 0, 10, "the upstream released")
    await async_wait_until(lambda: not proxy.worker.connections, 10, "the client connection gone")


async def test_client_gone_while_waiting_leaks_nothing(start_proxy) -> None:
    # While the request is with the upstream the proxy does not read from the client, so it
    # only learns that the client left when the answer comes; then everything is released.
    release = asyncio.Event()

    async def slow(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await read_request(reader) is not None:
            up.requests += 1
            await release.wait()
            writer.write(response(body=b"x" * 300_000))
            await writer.drain()

    async with RawUpstream(slow) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"']))
        (peer,) = proxy.worker.pools["app"].primary
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        await async_wait_until(lambda: upstream.requests == 1, 10, "the request upstream")
        writer.close()
        release.set()
        await async_wait_until(lambda: not proxy.worker.connections, 10, "the client gone")
        assert peer.active == 0
        assert not temp_fds(proxy.temp_path)
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            assert len((await asyncio.wait_for(client.get("/"), 10)).content) == 300_000


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody",
        b"HTTP/1.0 200 OK\r\n\r\nbody",  # delimited by the close
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nbo\r\n2;x=y\r\ndy\r\n0\r\n\r\n",
    ],
    ids=["informational", "until-close", "chunked"],
)
async def test_upstream_framings(start_proxy, answer: bytes) -> None:
    async def answer_once(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with RawUpstream(answer_once) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"']))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for _ in range(2):
                response = await asyncio.wait_for(client.get("/"), 10)
                assert response.status_code == 200
                assert response.content == b"body"


async def test_a_released_connection_goes_to_a_request_still_connecting(start_proxy) -> None:
    """A request that found no idle connection takes one released while it connects."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # an accept queue of one: filled below, so later connects hang
    listener.setblocking(False)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    filler = socket.socket()
    served: list[bytes] = []
    try:
        proxy = await start_proxy(
            proxy_yaml([f'"{address}"'], upstream="keepalive: 4\nconnect_timeout: 20s")
        )
        (peer,) = proxy.worker.pools["app"].primary
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            first = asyncio.ensure_future(client.get("/first"))
            upstream, _ = await asyncio.wait_for(loop.sock_accept(listener), 10)
            reader, writer = await asyncio.open_connection(sock=upstream)
            served.append(await read_request(reader) or b"")
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())  # takes the queue's one place
            second = asyncio.ensure_future(client.get("/second"))
            await async_wait_until(
                lambda: proxy.worker.pools["app"].waiting(peer) == 1, 10, "a request connecting"
            )
            writer.write(response(body=b"one"))  # frees the connection: the waiter takes it
            served.append(await asyncio.wait_for(read_request(reader), 10) or b"")
            writer.write(response(body=b"two"))
            assert (await first).text == "one"
            assert (await second).text == "two"
            # The connect the second request gave up on goes on: once the queue has room
            # it is made, nobody wants it, and the pool keeps it for the next request.
            filler.close()
            late, _ = await asyncio.wait_for(loop.sock_accept(listener), 15)
            await async_wait_until(
                lambda: proxy.worker.pools["app"].idle_connections(peer) == 2 and not peer.active,
                10,
                "the late connection kept idle",
            )
            late.close()
            writer.close()
    finally:
        filler.close()
        listener.close()
    assert [head.split(b" ")[1] for head in served] == [b"/first", b"/second"]
    assert not proxy.worker.pools["app"].waiting(peer)


async def test_body_bytes_after_a_head_answer_are_never_taken_as_the_next_response(
    start_proxy,
) -> None:
    """A peer that wrongly sends a body after its HEAD answer is out of step: its connection
    is not reused, so those bytes cannot become the next client's response."""

    async def head_with_a_body(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (head := await read_request(reader)) is not None:
            up.requests += 1
            if head.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 X\r\ncontent-length: 9\r\n\r\nsmuggled!")
            else:
                writer.write(response(body=b"real"))
            await writer.drain()

    async with RawUpstream(head_with_a_body) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"'], upstream="keepalive: 4"))
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            head = await client.head("/")
            assert head.status_code == 200 and head.headers["content-length"] == "9"
            assert (await client.get("/")).text == "real"
        assert upstream.requests == 2
        assert upstream.accepted == 2  # the HEAD's connection was not used again


async def test_connections_freed_by_a_burst_are_kept_a_moment_then_trimmed(start_proxy) -> None:
    """A burst needing more connections than `keepalive` leaves the surplus idle for a
    moment: the next burst reuses it instead of connecting again. Unused, it is closed."""
    burst = 6
    gates = [asyncio.Event(), asyncio.Event()]

    async def held_answers(
        up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await read_request(reader) is not None:
            up.requests += 1
            if up.requests <= len(gates) * burst:  # each burst wholly in flight at once
                await gates[(up.requests - 1) // burst].wait()
            writer.write(response())
            await writer.drain()

    async with RawUpstream(held_answers) as upstream:
        proxy = await start_proxy(proxy_yaml([f'"{upstream.address}"'], upstream="keepalive: 2"))
        (peer,) = proxy.worker.pools["app"].primary
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
            for round_number, gate in enumerate(gates, 1):
                calls = [asyncio.ensure_future(client.get("/")) for _ in range(burst)]
                await async_wait_until(
                    lambda n=round_number: upstream.requests == n * burst, 10, "a whole burst"
                )
                gate.set()
                assert [r.text for r in await asyncio.gather(*calls)] == ["ok"] * burst
                assert (
                    proxy.worker.pools["app"].idle_connections(peer) == burst
                )  # the surplus stays for the next burst
            assert upstream.accepted == burst  # the second burst opened no connection
            # Unused, the surplus goes, down to `keepalive`.
            await async_wait_until(lambda: upstream.open == 2, 10, "surplus connections closed")
            assert proxy.worker.pools["app"].idle_connections(peer) == 2
            assert (await client.get("/")).text == "ok"  # a kept one still serves
        assert upstream.accepted == burst

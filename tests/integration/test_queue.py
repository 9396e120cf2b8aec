"""`queue: {size, timeout}`: requests that find every server at max_conns wait for a place;
a full queue or a wait past the timeout gets 503 + Retry-After; a client that leaves,
leaves the queue at once."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from edgeproxy.config import parse_config
from edgeproxy.errors import ConfigError
from tests.conftest import async_wait_until, free_port, wait_until
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.test_master import Edge, get
from tests.integration.test_max_conns import HoldingUpstream

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture
def holding() -> Iterator[HoldingUpstream]:
    upstream = HoldingUpstream()
    yield upstream
    upstream.close()


def queued_yaml(address: str, size: int, timeout: str) -> str:
    return proxy_yaml(
        [f'{{address: "{address}", max_conns: 1}}'],
        upstream=f"keepalive: 0\nqueue: {{size: {size}, timeout: {timeout}}}",
    )


async def test_a_request_waits_for_a_place_and_a_full_queue_gets_503(
    start_proxy, holding: HoldingUpstream
) -> None:
    proxy = await start_proxy(queued_yaml(holding.address, size=1, timeout="20s"))
    pool = proxy.worker.pools["app"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        first = asyncio.create_task(client.get("/first"))
        await async_wait_until(lambda: holding.in_flight == 1, what="the first request held")
        second = asyncio.create_task(client.get("/second"))
        await async_wait_until(lambda: len(pool.queue) == 1, what="the second one queued")
        full = await client.get("/third")
        assert full.status_code == 503
        assert full.headers["retry-after"] == "20"
        assert not second.done()
        holding.release.set()
        answers = [await asyncio.wait_for(task, 15) for task in (first, second)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "held")] * 2
    assert (holding.most, holding.seen) == (1, 2)
    assert not pool.queue


async def test_a_wait_past_the_timeout_gets_503(start_proxy, holding: HoldingUpstream) -> None:
    proxy = await start_proxy(queued_yaml(holding.address, size=5, timeout="300ms"))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        first = asyncio.create_task(client.get("/first"))
        await async_wait_until(lambda: holding.in_flight == 1, what="the first request held")
        late = await asyncio.wait_for(client.get("/late"), 15)
        assert late.status_code == 503
        assert late.headers["retry-after"] == "1"
        holding.release.set()
        assert (await asyncio.wait_for(first, 15)).text == "held"
    assert holding.seen == 1  # the one that timed out never reached the server
    assert not proxy.worker.pools["app"].queue


async def test_a_client_that_leaves_leaves_the_queue(start_proxy, holding: HoldingUpstream) -> None:
    proxy = await start_proxy(queued_yaml(holding.address, size=1, timeout="30s"))
    pool = proxy.worker.pools["app"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as client:
        first = asyncio.create_task(client.get("/first"))
        await async_wait_until(lambda: holding.in_flight == 1, what="the first request held")
        quitter = socket.create_connection(("127.0.0.1", proxy.port))
        quitter.sendall(b"GET /quitter HTTP/1.1\r\nHost: t\r\n\r\n")
        await async_wait_until(lambda: len(pool.queue) == 1, what="the quitter queued")
        # It vanishes (a reset; a plain FIN reads as a half-close: see the README).
        quitter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        quitter.close()
        await async_wait_until(lambda: not pool.queue, what="the queue emptied")
        # Its place in the queue is free: the next request waits there, and is served.
        second = asyncio.create_task(client.get("/second"))
        await async_wait_until(lambda: len(pool.queue) == 1, what="the second one queued")
        holding.release.set()
        answers = [await asyncio.wait_for(task, 15) for task in (first, second)]
    assert [a.status_code for a in answers] == [200, 200]
    assert holding.seen == 2  # the quitter's request never went upstream


def test_queued_requests_of_every_worker_get_through_at_max_conns(
    tmp_path: Path, holding: HoldingUpstream
) -> None:
    edge = Edge(tmp_path, free_port(), holding.address)
    try:
        edge.start(
            workers=2,
            upstream=f"{{keepalive: 0, queue: {{size: 20, timeout: 20s}}, "
            f'servers: [{{address: "{holding.address}", max_conns: 2}}]}}',
        )
        with ThreadPoolExecutor(8) as clients:
            answers = [clients.submit(get, edge.url, "/", 30) for _ in range(8)]
            wait_until(lambda: holding.in_flight == 2, 15, "two requests held upstream")
            holding.release.set()
            texts = [future.result(30).text for future in answers]
    finally:
        edge.stop()
    assert texts == ["held"] * 8
    assert (holding.most, holding.seen) == (2, 8)


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (
            'servers: ["127.0.0.1:1"]\nqueue: {size: 10}',
            "upstreams.app.queue: no server has max_conns: no request would ever wait",
        ),
        (
            'servers: [{address: "127.0.0.1:1", max_conns: 2}]\nqueue: {timeout: 5s}',
            "upstreams.app.queue.size: required",
        ),
        (
            'servers: [{address: "127.0.0.1:1", max_conns: 2}]\nqueue: {size: 0}',
            "upstreams.app.queue.size:",
        ),
    ],
)
def test_queue_config_is_checked(tmp_path: Path, upstream: str, expected: str) -> None:
    text = proxy_yaml([], upstream=upstream).replace("{temp}", str(tmp_path))
    text = text.replace("    servers:\n\n", "")  # the servers are in `upstream`
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert expected in str(info.value)

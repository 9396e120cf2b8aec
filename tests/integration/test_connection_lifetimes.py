"""Connections are freed by reference counting as soon as they close, not by the cyclic GC.

gunicorn's sync workers close every connection, so the proxy opens one upstream connection
per request; browsers open and close client connections all the time. A reference cycle
through either (a timer's callback, the parser's callbacks) leaves every one of them to the
cyclic garbage collector, whose collections then take a share of the worker's CPU that
grows with the request rate.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from edgeproxy.server.connection import DownstreamConnection
from edgeproxy.upstream.connection import UpstreamConnection
from tests.conftest import Gunicorn, async_wait_until
from tests.integration.fake_upstreams import proxy_yaml

REQUESTS = 20


def live(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_closed_connections_are_freed_without_the_cyclic_gc(
    start_proxy, gunicorn_a: Gunicorn
) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"']))
    with no_cyclic_gc():
        upstream_before = live(UpstreamConnection)
        client_before = live(DownstreamConnection)
        for _ in range(REQUESTS):  # a new client connection each, and gunicorn closes its own
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                response = await client.get("/")
                assert response.status_code == 200
        await async_wait_until(
            lambda: live(UpstreamConnection) <= upstream_before, 10, "upstream connections freed"
        )
        await async_wait_until(
            lambda: live(DownstreamConnection) <= client_before, 10, "client connections freed"
        )

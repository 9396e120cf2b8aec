"""Timeouts fire on time, whatever other connections' timers do (issue 18, part 1).

All of a worker's timeouts share one timer wheel. An idle keep-alive connection's timer is
filed at its earlier header deadline and re-filed, when that bucket comes, at the long
keep-alive deadline; that re-filing once held back every bucket behind it, so a stalled
request head beside it got its 408 near the keep-alive timeout instead of its own.
"""

from __future__ import annotations

import asyncio

from edgeproxy.timer import RESOLUTION
from tests.conftest import Proxy
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client, RecordingUpstream, get

HEADER_TIMEOUT = 2.0
# The 408 may come one wheel step after the deadline, plus the loop's own delays.
ALLOWED_LATENESS = 0.5


async def test_a_header_timeout_fires_on_time_beside_an_idle_keepalive_connection(
    start_proxy,
) -> None:
    upstream = await RecordingUpstream().start()
    try:
        proxy: Proxy = await start_proxy(
            proxy_yaml(
                [upstream.address],
                http=f"client_header_timeout: {HEADER_TIMEOUT}s\nkeepalive_timeout: 60s",
                upstream="keepalive: 0",
            )
        )
        loop = asyncio.get_running_loop()
        idle = await Client.connect(proxy.port)
        stalled: Client | None = None
        try:
            # One connection is served and stays open, idle, for the long keep-alive.
            assert (await idle.exchange(get("/first"))).status == 200
            # The stalled head's deadline must fall in a later wheel bucket than the one
            # the idle connection's timer is still filed in (its own header deadline).
            await asyncio.sleep(2 * RESOLUTION)  # pacing the scenario, not waiting on the proxy
            started = loop.time()
            stalled = await Client.connect(proxy.port)
            await stalled.send(b"GET /second HTTP/1.1\r\nHost: t\r\n")  # no blank line: stalled
            response = await stalled.response(timeout=HEADER_TIMEOUT + 3)
            elapsed = loop.time() - started
            assert response.status == 408
            assert HEADER_TIMEOUT <= elapsed <= HEADER_TIMEOUT + ALLOWED_LATENESS
            await stalled.eof()
            # The idle connection was left alone and still serves.
            assert (await idle.exchange(get("/third"))).status == 200
        finally:
            idle.close()
            if stalled is not None:
                stalled.close()
    finally:
        upstream.close()

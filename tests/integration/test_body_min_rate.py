"""client_body_min_rate: a body trickled slower than the minimum average rate is cut off
with 408 once client_body_timeout has passed, and its spool file goes with it; a slow but
steady body is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.conftest import Gunicorn, async_wait_until
from tests.integration.fake_upstreams import proxy_yaml, temp_fds

# A 1 s body timeout so the minimum applies soon; bodies spool to disk past 16 bytes.
HTTP = "client_body_timeout: 1s\nclient_body_buffer_size: 16"


async def trickle(port: int, size: int, piece: int, interval: float) -> tuple[bytes, float]:
    """POST a `size`-byte body, `piece` bytes every `interval` s; the answer and its delay."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    head = b"POST /echo HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
    writer.write(head % size)
    answer = asyncio.ensure_future(reader.read())  # to the close
    sent = 0
    for _ in range(size // piece + 1):  # bounded by the body's size
        if answer.done() or sent >= size or time.monotonic() - started > 5:
            break
        chunk = min(piece, size - sent)
        writer.write(b"x" * chunk)
        sent += chunk
        await asyncio.wait([answer], timeout=interval)
    data = await asyncio.wait_for(answer, 10)
    writer.close()
    return data, time.monotonic() - started


async def test_a_body_below_the_minimum_rate_gets_408_and_its_spool_goes(
    start_proxy: Callable[..., object], gunicorn_a: Gunicorn
) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"'], http=HTTP))  # type: ignore[misc]
    # 20 bytes every 0.1 s is 200 bytes/s, under the default 500.
    answer, elapsed = await trickle(proxy.port, 100_000, 20, 0.1)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert elapsed >= 1.0  # not before client_body_timeout has passed
    await async_wait_until(lambda: not temp_fds(proxy.temp_path), 10, "the spool file closed")


async def test_a_slow_body_above_the_minimum_rate_is_read_whole(
    start_proxy: Callable[..., object], gunicorn_a: Gunicorn
) -> None:
    proxy = await start_proxy(proxy_yaml([f'"{gunicorn_a.address}"'], http=HTTP))  # type: ignore[misc]
    # 300 bytes every 0.1 s: 3000 bytes/s, for about 1.5 s, past the body timeout.
    answer, _ = await trickle(proxy.port, 4500, 300, 0.1)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert b'"body_length": 4500' in answer

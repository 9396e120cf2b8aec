"""The scrape's HTTP server: one GET of one path per connection, then close.

Prometheus asks for the metrics every few seconds from one place; nothing here needs
keep-alive or a codec. A request head over HEAD_LIMIT, or slower than READ_TIMEOUT, is
dropped, so a stray client cannot hold the exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from edgeproxy.metrics.exposition import CONTENT_TYPE

HEAD_LIMIT = 8192
READ_TIMEOUT = 5.0
Scrape = Callable[[], Awaitable[str]]


def _response(
    status: str, body: bytes, content_type: str = "text/plain", head: bool = False
) -> bytes:
    fields = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return fields.encode() + (b"" if head else body)


class Endpoint:
    def __init__(self, path: str, scrape: Scrape) -> None:
        self.path = path
        self.scrape = scrape

    async def answer(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _response("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target.decode("latin-1") != self.path:
            return _response("404 Not Found", b"not found\n")
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"method not allowed\n")
        body = (await self.scrape()).encode()
        return _response("200 OK", body, CONTENT_TYPE, head=method == b"HEAD")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(await self.answer(head))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self.handle, sock=sock, limit=HEAD_LIMIT)

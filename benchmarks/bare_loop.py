"""Calibration only: the least a uvloop proxy can do per request, to put figures in scale.

    python benchmarks/bare_loop.py 8081 127.0.0.1:9101   # listen on 8081, forward to 9101
    wrk -t1 -c50 -d10s http://127.0.0.1:8081/

It finds the end of each request head and forwards the bytes as they are over pooled
keep-alive connections, then relays the response once its Content-Length is in. No
parsing beyond that, no rules, no timeouts, no limits: not a proxy anyone should run.
BENCHMARKS.md quotes such a loop (0.6x nginx); edgeproxy does everything this skips.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class UpstreamSide(asyncio.Protocol):
    def __init__(self, idle: list[UpstreamSide]) -> None:
        self.idle = idle
        self.buffer = b""
        self.client: ClientSide | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:  # the backend closed it (nginx: after keepalive_requests)
            self.idle.remove(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        response, self.buffer = self.buffer, b""
        client, self.client = self.client, None
        if b"\r\nconnection: close" not in head:
            self.idle.append(self)
        transport = client.transport if client is not None else None
        if transport is not None and not transport.is_closing():  # wrk may have hung up
            transport.write(response)


class ClientSide(asyncio.Protocol):
    def __init__(self, idle: list[UpstreamSide], upstream: tuple[str, int]) -> None:
        self.idle = idle
        self.upstream = upstream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.connecting: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        request, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
        if self.idle:
            self._send(self.idle.pop(), request)
        else:
            task = asyncio.ensure_future(self._connect_and_send(request))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _connect_and_send(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(
            lambda: UpstreamSide(self.idle), self.upstream[0], self.upstream[1]
        )
        self._send(upstream, request)

    def _send(self, upstream: UpstreamSide, request: bytes) -> None:
        upstream.client = self
        assert upstream.transport is not None
        upstream.transport.write(request)


async def serve(port: int, upstream: tuple[str, int]) -> None:
    idle: list[UpstreamSide] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientSide(idle, upstream), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    host, _, port = sys.argv[2].rpartition(":")
    uvloop.run(serve(int(sys.argv[1]), (host, int(port))))


if __name__ == "__main__":
    main()

"""A fixed-response HTTP/1.1 backend, used only when nginx is not installed.

Usage: python tiny_backend.py HOST PORT

It answers every request with `200 ok` on a kept-alive connection. It reads just enough
of each request to find where it ends (Content-Length or a chunked body without
trailers); it is no general server, only a backend that costs the proxy little.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
CHUNKED_END = b"0\r\n\r\n"


class FixedResponse(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body_left = 0  # bytes of a Content-Length body still to skip
        self.chunked = False  # skipping a chunked body up to its last chunk

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        answers = 0
        while True:
            if self.body_left:
                skip = min(self.body_left, len(buf))
                del buf[:skip]
                self.body_left -= skip
                if self.body_left:
                    break
                answers += 1
                continue
            if self.chunked:
                end = buf.find(CHUNKED_END)
                if end < 0:
                    # Keep a tail that may hold the start of the terminator.
                    del buf[: max(0, len(buf) - len(CHUNKED_END))]
                    break
                del buf[: end + len(CHUNKED_END)]
                self.chunked = False
                answers += 1
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.body_left, self.chunked = _body_framing(head)
            if not self.body_left and not self.chunked:
                answers += 1
        if answers and self.transport is not None:
            self.transport.write(RESPONSE * answers)


def _body_framing(head: bytes) -> tuple[int, bool]:
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
    return length, chunked


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedResponse, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        import uvloop  # an edgeproxy dependency; plain asyncio works too, only slower
    except ImportError:
        asyncio.run(serve(host, port))
    else:
        uvloop.run(serve(host, port))


if __name__ == "__main__":
    main()

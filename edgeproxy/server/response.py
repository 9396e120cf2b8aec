"""Writing one response at a time to the client, with framing and flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from edgeproxy.http.date import DATE
from edgeproxy.http.events import RequestHead
from edgeproxy.http.status import error_page, status_line_for

_SERVER = b"Server: edgeproxy\r\nDate: "
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_HTML = (b"content-type", b"text/html")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ResponseWriter:
    """Frames one response at a time onto the client transport.

    Writes never wait: the caller checks `writable` (the transport is under its high-water
    mark) and holds further data itself until the connection reports room again.
    """

    __slots__ = (
        "body_bytes",
        "chunked",
        "http11",
        "keep_alive",
        "lost",
        "no_body",
        "started",
        "status",
        "transport",
        "writable",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writable = True
        self.lost = False
        self.reset(None, True)

    def reset(self, head: RequestHead | None, keep_alive: bool) -> None:
        """Prepare for the response to `head` (None: a request that never parsed)."""
        self.status = 0
        self.body_bytes = 0
        self.started = False
        self.chunked = False
        self.keep_alive = keep_alive
        self.http11 = head is None or head.version == b"1.1"
        self.no_body = head is not None and head.method == b"HEAD"

    def send_head(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        length: int | None,
        reason: bytes = b"",
        body: bytes = b"",
    ) -> None:
        """Write the status line and fields; `body` (if any) goes in the same write.

        `length` is the body length when known; otherwise the body is chunked for HTTP/1.1
        clients and delimited by closing the connection for HTTP/1.0 ones.
        """
        self.status = status
        self.started = True
        parts = [status_line_for(status, reason), _SERVER, DATE.value(), b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        no_body = self.no_body or status in (204, 304) or status < 200
        if no_body:
            self.no_body = True
            if length is not None and status not in (204, 304):
                parts.append(b"content-length: %d\r\n" % length)
        elif length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        elif self.http11:
            self.chunked = True
            parts.append(_CHUNKED)
        else:
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(_CLOSE)
        elif not self.http11:
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        if body and not self.no_body:
            self.body_bytes = len(body)
            parts.append(body)
        self.transport.write(b"".join(parts))

    def send_error(self, status: int, close: bool = False) -> None:
        """A complete small error response."""
        if close:
            self.keep_alive = False
        page = error_page(status)
        self.send_head(status, (_HTML,), len(page), body=page)

    def write(self, data: bytes) -> None:
        if self.no_body or not data or self.lost:
            return
        self.body_bytes += len(data)
        if self.chunked:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def finish(self) -> None:
        if self.chunked and not self.lost:
            self.transport.write(b"0\r\n\r\n")

"""Writing one response at a time to the client, with framing and flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Final

from edgeproxy.http.date import DATE
from edgeproxy.http.events import Headers, RequestHead
from edgeproxy.http.status import error_page, status_line_for
from edgeproxy.server.body_writers import CHUNKED, LENGTH, NO_BODY, WRITERS, BodyWriter

_SERVER: Final = b"Server: edgeproxy\r\nDate: "
_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
_CLOSE: Final = b"Connection: close\r\n"
_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
_HTML: Final = (b"Content-Type", b"text/html")
_REQUEST_ID: Final = b"X-Request-ID: "
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# The writers of WRITERS, looked up once (Final: no dict lookup per use when compiled).
_LENGTH_WRITER: Final = WRITERS[LENGTH]
_CHUNKED_WRITER: Final = WRITERS[CHUNKED]
_NO_BODY_WRITER: Final = WRITERS[NO_BODY]


class Answer:
    """A complete small response known in advance: a `return`, the 404 of an unmatched
    path, a phase's refusal. Without a body, a 4xx/5xx gets the standard error page (as
    nginx's `return 404;`)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
    ) -> None:
        headers = list(headers)
        if not body and status >= 400:
            body = error_page(status)
            headers.append(_HTML)
        self.status = status
        self.headers: Headers = headers
        self.body = body


class ResponseWriter:
    """Frames one response at a time onto the client transport.

    Writes never wait: the caller checks `writable` (the transport is under its high-water
    mark) and holds further data itself until the connection reports room again.
    """

    __slots__ = (
        "added_headers",
        "body",
        "body_bytes",
        "head_bytes",
        "http11",
        "keep_alive",
        "lost",
        "no_body",
        "request_id",
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
        self.head_bytes = 0  # the status line and fields, as written
        self.request_id = b""  # returned as X-Request-ID (none for a request never parsed)
        self.started = False
        # Fields a request phase adds to whatever answers.
        self.added_headers: Sequence[tuple[bytes, bytes]] = ()
        self.body: BodyWriter = _LENGTH_WRITER
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
        if self.added_headers:
            for name, value in self.added_headers:
                parts += (name, b": ", value, b"\r\n")
        if self.request_id:
            # Appended one by one: cheaper than extending the list by a tuple.
            parts.append(_REQUEST_ID)
            parts.append(self.request_id)
            parts.append(b"\r\n")
        no_body = self.no_body or status in (204, 304) or status < 200
        if no_body:
            self.no_body = True
            self.body = _NO_BODY_WRITER
            if length is not None and status not in (204, 304):
                parts.append(b"Content-Length: %d\r\n" % length)
        elif length is not None:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif self.http11:
            self.body = _CHUNKED_WRITER
            parts.append(_CHUNKED)
        else:
            self.keep_alive = False  # the body ends when the connection closes
        if not self.keep_alive:
            parts.append(_CLOSE)
        elif not self.http11:
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        if body and not self.no_body:
            self.body_bytes = len(body)
            parts.append(body)
        data = b"".join(parts)
        self.head_bytes = len(data) - self.body_bytes
        self.transport.write(data)

    @property
    def chunked(self) -> bool:
        return self.body is _CHUNKED_WRITER

    def send_answer(self, answer: Answer) -> None:
        self.send_head(answer.status, answer.headers, len(answer.body), body=answer.body)

    def send_error(self, status: int, close: bool = False) -> None:
        """A complete small error response."""
        if close:
            self.keep_alive = False
        page = error_page(status)
        self.send_head(status, (_HTML,), len(page), body=page)

    def write(self, data: bytes) -> None:
        """Body bytes, framed as the head announced (dropped for a bodiless response)."""
        if data and not self.lost:
            self.body_bytes += self.body.write(self.transport, data)

    def write_file(self, fd: int, offset: int, count: int) -> int:
        """Up to `count` body bytes from an open file; the number taken (call again with
        the rest once `writable`)."""
        if self.lost:
            return count
        sent = self.body.write_file(self.transport, fd, offset, count)
        if not self.no_body:
            self.body_bytes += sent
        return sent

    def finish(self) -> None:
        """The body is complete (the chunked writer ends it; the others need nothing)."""
        if not self.lost:
            self.body.finish(self.transport)

"""One client connection: read a complete request, dispatch it, write the response.

Phases: HEADER (client_header_timeout for the whole head) -> BODY (client_body_timeout
between reads) -> BUSY (the handler runs; pipelined bytes wait in the reader, and reading
pauses only if they pile up; a disconnect is noticed at once; send_timeout while the
client does not take the response) -> IDLE
(keepalive_timeout) -> HEADER ... There is no task per request: `return` is answered at
once, and a proxy exchange calls back `exchange_done` when its response is written.
A refused request ends in LINGER: the error is written, our side shut, and the client's
remaining bytes are read and dropped for a moment so that it sees the answer instead of
a reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from edgeproxy.config.model import HttpSettings, ReturnAction
from edgeproxy.errors import ClientError
from edgeproxy.http.events import END_OF_MESSAGE, NEED_DATA, RequestHead
from edgeproxy.http.reader import RequestReader
from edgeproxy.server.body import RequestBody
from edgeproxy.server.client_ip import client_ip
from edgeproxy.server.handlers import send_return
from edgeproxy.server.request import Request
from edgeproxy.server.response import CONTINUE, ResponseWriter
from edgeproxy.server.router import Router
from edgeproxy.timer import LazyTimer

if TYPE_CHECKING:
    from edgeproxy.server.proxy import ProxyExchange
    from edgeproxy.server.worker import Worker

log = logging.getLogger("edgeproxy.server")

_HEADER, _BODY, _BUSY, _IDLE, _LINGER = range(5)
LINGER_TIMEOUT = 5.0  # nginx lingering_timeout: 5s
_UNPARSED = RequestHead(b"", b"", b"", [])
_NO_BODY = RequestBody(0, "")  # shared by every bodiless request; nothing ever writes to it


class DownstreamConnection(asyncio.Protocol):
    # Slots: an idle keep-alive connection should cost as little memory as possible.
    __slots__ = (
        "_dispatching",
        "_next_ready",
        "exchange",
        "loop",
        "out",
        "peer_eof",
        "peer_ip",
        "phase",
        "read_paused",
        "reader",
        "request",
        "router",
        "served",
        "settings",
        "timer",
        "transport",
        "worker",
    )

    def __init__(self, worker: Worker, router: Router) -> None:
        self.worker = worker
        self.router = router
        self.settings: HttpSettings = router.default.config.http
        self.loop = worker.loop
        self.phase = _HEADER
        self.request: Request | None = None
        self.exchange: ProxyExchange | None = None
        self.served = 0
        self.peer_ip = ""
        self.peer_eof = False
        self.read_paused = False
        self._dispatching = False
        self._next_ready = False
        self.reader = RequestReader(worker.codec, self.settings.client_header_buffer_size)
        self.timer = LazyTimer(self.loop, self._on_timeout)
        self.transport: asyncio.Transport
        self.out: ResponseWriter

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else "unix:"
        self.out = ResponseWriter(self.transport)
        self.timer.start(self.settings.client_header_timeout)
        self.worker.connections.add(self)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _LINGER:
            return
        self.reader.feed(data)
        if phase == _IDLE:
            self.phase = _HEADER
            self._advance()
            if self.phase == _HEADER:  # the head did not arrive whole: now it is timed
                self.timer.start(self.settings.client_header_timeout)
            return
        if phase == _BODY:
            self.timer.touch(self.settings.client_body_timeout)
        if phase != _BUSY:
            self._advance()
        elif len(self.reader.buf) > self.settings.client_header_buffer_size:
            # Pipelined requests pile up behind a slow response: stop taking more.
            self.transport.pause_reading()
            self.read_paused = True

    def eof_received(self) -> bool:
        if self.phase == _BUSY:
            self.peer_eof = True  # a half-close after the request: answer, then close
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.close()  # the timer's callback is our bound method: a cycle, cut here
        self.worker.connections.discard(self)
        out = self.out
        out.lost = True
        out.writable = False
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.client_gone()
            out.keep_alive = False
            self._request_done(out.status if out.started else 499)
        elif self.request is not None:
            self.request.body.close()

    def pause_writing(self) -> None:
        self.out.writable = False
        if self.phase == _BUSY:
            self.timer.start(self.settings.send_timeout)

    def resume_writing(self) -> None:
        self.out.writable = True
        if self.phase == _BUSY:
            self.timer.suspend()
            if self.exchange is not None:
                self.exchange.on_client_writable()

    # --- reading a request ---

    def _advance(self) -> None:
        reader = self.reader
        try:
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    if self.peer_eof:  # half-closed in the middle of a request: it never ends
                        self.transport.close()
                    return
                if type(event) is bytes:
                    self._on_body(event)
                elif event is END_OF_MESSAGE:
                    if not self._dispatch():
                        return
                else:
                    assert isinstance(event, RequestHead)
                    if self._on_head(event):
                        # No body announced: the request is complete with its head.
                        reader.end_bodiless()
                        if not self._dispatch():
                            return
        except ClientError as exc:
            self._reject(exc)

    def _on_head(self, head: RequestHead) -> bool:
        """Set up the request; True when it has no body (it is complete)."""
        routes = self.router.server_for(head.host)
        server = routes.config
        self.settings = settings = server.http
        path, location = routes.route(head.target)
        has_body = head.chunked or bool(head.content_length)
        body = (
            RequestBody(settings.client_body_buffer_size, self.worker.config.temp_path)
            if has_body
            else _NO_BODY
        )
        peer_ip = self.peer_ip
        ip = (
            client_ip(peer_ip, head.headers, server.trusted_proxies)
            if server.trusted_proxies
            else peer_ip
        )
        # The start time only feeds the access log: no clock read when it is off.
        started = time.time() if self.worker.access_log.enabled else 0.0
        self.request = Request(head, routes, location, body, peer_ip, ip, started)
        if path is None:
            raise ClientError(400, "invalid path")
        if head.content_length is not None and head.content_length > settings.client_max_body_size:
            raise ClientError(413, "declared body too large")
        self.phase = _BODY
        if not has_body:
            return True
        self.timer.start(settings.client_body_timeout)
        if head.expect_continue:
            self.transport.write(CONTINUE)
        return False

    def _on_body(self, data: bytes) -> None:
        assert self.request is not None
        body = self.request.body
        if body.size + len(data) > self.settings.client_max_body_size:
            raise ClientError(413, "body too large")
        body.write(data)

    def _dispatch(self) -> bool:
        """Answer the complete request; True when that is done and the next may be read."""
        request = self.request
        assert request is not None
        self.timer.suspend()
        self.phase = _BUSY
        self.served += 1
        settings = self.settings
        keep_alive = (
            request.head.keep_alive
            and self.served < settings.keepalive_requests
            and settings.keepalive_timeout > 0
            and not self.worker.stopping
        )
        out = self.out
        out.reset(request.head, keep_alive)
        location = request.location
        if location is None:
            out.send_error(404)
        elif isinstance(location.handler, ReturnAction):
            send_return(location.handler, out)
        else:
            self.exchange = exchange = self.worker.proxy.exchange(request, self)
            self._dispatching = True
            exchange.try_next_peer()  # may finish at once (e.g. no live peer: 502)
            self._dispatching = False
            return self.exchange is None and self._next_ready
        self._request_done(out.status)
        return self._ready_for_next()

    # --- called by the proxy exchange ---

    def exchange_done(self) -> None:
        self.exchange = None
        self._request_done(self.out.status)
        ready = self._ready_for_next()
        if self._dispatching:
            self._next_ready = ready  # _dispatch's caller reads on, without recursion
        elif ready:
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            if self.phase == _HEADER:  # pipelined bytes are waiting
                self._advance()

    def abort(self) -> None:
        self.out.keep_alive = False
        self.transport.abort()

    # --- between requests ---

    def _request_done(self, status: int) -> None:
        request = self.request
        assert request is not None
        if request.body is not _NO_BODY:
            request.body.close()
        access_log = self.worker.access_log
        if access_log.enabled:
            access_log.log(request, status, self.out.body_bytes)
        self.request = None

    def _ready_for_next(self) -> bool:
        """Set up for the next request on this connection, or close it (False)."""
        transport = self.transport
        if transport.is_closing():
            return False
        if not self.out.keep_alive:
            transport.close()
            return False
        reader = self.reader
        reader.start_next()
        if reader.idle:
            if self.peer_eof:  # the client half-closed and every request it sent is answered
                transport.close()
                return False
            self.phase = _IDLE
            self.timer.start(self.settings.keepalive_timeout)
        else:
            self.phase = _HEADER
            self.timer.start(self.settings.client_header_timeout)
        return True

    def _reject(self, exc: ClientError) -> None:
        """Answer a refused request, then linger and close."""
        log.info("client %s: %d %s", self.peer_ip, exc.status, exc.reason)
        request = self.request
        out = self.out
        out.reset(request.head if request is not None else None, False)
        out.send_error(exc.status, close=True)
        if request is None:
            request = Request(
                _UNPARSED, self.router.default, None, _NO_BODY, self.peer_ip, self.peer_ip,
                time.time(),
            )  # fmt: skip
        request.body.close()
        self.worker.access_log.log(request, exc.status, out.body_bytes)
        self.request = None
        self.phase = _LINGER
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.timer.start(LINGER_TIMEOUT)

    def _on_timeout(self) -> None:
        phase = self.phase
        if phase == _BODY or (phase == _HEADER and not self.reader.idle):
            self._reject(ClientError(408, "client timed out"))
        elif phase == _BUSY:
            log.info("client %s: send_timeout, closing", self.peer_ip)
            self.abort()  # the client stopped reading the response
        else:
            self.transport.close()

    def close_if_idle(self) -> None:
        """For a graceful stop: drop keep-alive connections that wait for a request."""
        if self.phase == _IDLE or (self.phase == _HEADER and self.reader.idle):
            self.transport.close()

"""One client connection: read a complete request, run its phases, drive its handler.

The connection knows requests, phases and handlers only through the interfaces of
edgeproxy.server.request; what a handler does (proxying, answering) is not its business.
Its states, and the only method that changes them (`_enter`, with the timer of each):

    HEADER  a head is awaited or arriving             client_header_timeout for the whole head
    BODY    the head is in; its body is arriving      client_body_timeout between two reads,
                                                      and client_body_min_rate on average
    BUSY    the request is complete; its handler      send_timeout while the client takes
            answers (pipelined bytes wait)            nothing; none otherwise
    IDLE    keep-alive, nothing buffered              keepalive_timeout
    LINGER  a refused request was answered; what      LINGER_TIMEOUT, then close
            the client still sends is dropped
    CLOSED  closed by us or by the client             none
    HANDED_OVER  after a 101, another protocol owns   none here (the tunnel has its own)
            the transport (`hand_over`); the TCP
            connection still counts until it ends

    HEADER -> BODY -> BUSY (or HEADER -> BUSY without a body); BUSY -> IDLE or HEADER
    (pipelined bytes) when the response is done and the connection stays open; IDLE ->
    HEADER when a head begins but does not arrive whole (a whole one goes on at once, with
    no timer to move); HEADER/BODY -> LINGER on a refused request or a timeout; BUSY ->
    HANDED_OVER when the handler switched protocols, then CLOSED when that connection ends.

There is no task per request: the reading loop (`_read`) runs in data_received, and a
handler that answers later calls `handler_done`, which reads on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, cast

from edgeproxy.config.model import HttpSettings
from edgeproxy.errors import ClientError
from edgeproxy.http.events import END_OF_MESSAGE, NEED_DATA, RequestHead
from edgeproxy.http.logtext import request_line
from edgeproxy.http.reader import RefusedRequest, RequestReader
from edgeproxy.server.body import RequestBody, SpoolError
from edgeproxy.server.request import ConnectionPhase, Delay, Request, Responder
from edgeproxy.server.response import CONTINUE, Answer, ResponseWriter
from edgeproxy.server.router import Router
from edgeproxy.server.services import WorkerServices
from edgeproxy.timer import LazyTimer

log = logging.getLogger("edgeproxy.server")

# The states, in this order (see data_received). Final: compiled code inlines them
# instead of looking each one up in the module's dict.
HEADER: Final = 0
BODY: Final = 1
BUSY: Final = 2
IDLE: Final = 3
LINGER: Final = 4
CLOSED: Final = 5
HANDED_OVER: Final = 6
LINGER_TIMEOUT: Final = 5.0  # nginx lingering_timeout: 5s
_UNPARSED: Final = RequestHead(b"", b"", b"", [])
# Shared by every bodiless request; nothing ever writes to it.
_NO_BODY: Final = RequestBody(0, "")
_wall_clock: Final = time.time  # a Final: no module attribute lookup per request


class _PhaseRefusal(ClientError):
    """A phase answered a request whose body is still to come: refuse it with that answer."""

    def __init__(self, answer: Answer, phase: str) -> None:
        super().__init__(answer.status, phase)
        self.answer = answer


class DownstreamConnection(asyncio.Protocol):
    # Slots: an idle keep-alive connection should cost as little memory as possible.
    __slots__ = (
        "admitted",
        "body_started",
        "delayed",
        "loop",
        "out",
        "peer_eof",
        "peer_ip",
        "peer_source",
        "read_paused",
        "reader",
        "request",
        "responder",
        "router",
        "served",
        "services",
        "settings",
        "state",
        "timer",
        "transport",
    )

    def __init__(self, services: WorkerServices, router: Router) -> None:
        self.services = services
        self.router = router
        self.settings: HttpSettings = router.default.config.http
        self.loop = services.loop
        self.state = HEADER
        self.request: Request | None = None
        self.responder: Responder | None = None
        self.delayed: asyncio.TimerHandle | None = None  # a phase's Delay, running out
        self.admitted: tuple[ConnectionPhase, ...] = ()  # connection phases to release
        self.served = 0
        self.peer_ip = ""
        self.peer_source = "peer"  # or "proxy_protocol": a PROXY header named peer_ip
        self.peer_eof = False
        self.read_paused = False
        self.body_started = 0.0
        self.reader = RequestReader(services.codec, self.settings.client_header_buffer_size)
        self.timer = LazyTimer(self.loop, self._on_timeout)
        self.transport: asyncio.Transport
        self.out: ResponseWriter

    # --- the one place the state changes ---

    def _enter(self, state: int) -> None:
        self.state = state
        timer = self.timer
        if state == HEADER:
            timer.start(self.settings.client_header_timeout)
        elif state == BODY:
            timer.start(self.settings.client_body_timeout)
            # The body's start, plus client_body_timeout, as the timer's deadline counts it.
            self.body_started = timer.deadline
        elif state == BUSY:
            timer.suspend()  # send_timeout runs only while the client takes nothing
        elif state == IDLE:
            timer.start(self.settings.keepalive_timeout)
        elif state == LINGER:
            timer.start(LINGER_TIMEOUT)
        else:
            timer.stop()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else "unix:"
        self.peer_source = transport.get_extra_info("client_ip_source", "peer")
        self.out = ResponseWriter(self.transport)
        self.services.connections.add(self)
        self._enter(HEADER)
        if self.router.connection_phases:
            self._admit(self.router.connection_phases)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state >= LINGER:  # LINGER, CLOSED or HANDED_OVER: nothing more is read
            return
        self.reader.feed(data)
        if self.services.traffic is not None:
            self.services.traffic.received(len(data))
        if state == BUSY:
            if len(self.reader.buf) > self.settings.client_header_buffer_size:
                # Pipelined requests pile up behind a slow response: stop taking more.
                self.transport.pause_reading()
                self.read_paused = True
            return
        if state == BODY:
            self.timer.touch(self.settings.client_body_timeout)
        self._read()

    def eof_received(self) -> bool:
        if self.state == BUSY:
            self.peer_eof = True  # a half-close after the request: answer, then close
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()
        out = self.out
        out.lost = True
        out.writable = False
        delayed = self.delayed
        if delayed is not None:
            self.delayed = None
            delayed.cancel()
        responder = self.responder
        if responder is not None:
            self.responder = None
            responder.client_gone()
        if responder is not None or delayed is not None:  # gone while being answered
            out.keep_alive = False
            self._finish_request(out.status if out.started else 499)
        elif self.request is not None:  # gone while sending it
            self.request.body.close()

    def _closed(self) -> None:
        """The TCP connection ended (from connection_lost, or after a hand-over)."""
        self._enter(CLOSED)
        self.timer.close()  # the timer's callback is our bound method: a cycle, cut here
        self.services.connections.discard(self)
        for phase in self.admitted:
            phase.release(self.peer_ip)
        self.admitted = ()

    def pause_writing(self) -> None:
        self.out.writable = False
        if self.state == BUSY:
            self.timer.start(self.settings.send_timeout)
            if self.responder is not None:
                self.responder.on_client_full()

    def resume_writing(self) -> None:
        self.out.writable = True
        if self.state == BUSY:
            self.timer.suspend()
            if self.responder is not None:
                self.responder.on_client_writable()

    # --- reading requests ---

    def _read(self) -> None:
        """Take what the reader holds: heads, bodies, complete requests, until we must wait."""
        reader = self.reader
        try:
            while True:
                state = self.state
                if state != HEADER and state != BODY and state != IDLE:
                    return  # BUSY until the handler is done; LINGER, CLOSED for good
                event = reader.next_event()
                if event is NEED_DATA:
                    if self.peer_eof:  # half-closed in the middle of a request: it never ends
                        self.transport.close()
                    elif state == IDLE and not reader.idle:
                        self._enter(HEADER)  # a head has begun: now the whole of it is timed
                    return
                if type(event) is bytes:
                    self._on_body(event)
                elif event is END_OF_MESSAGE:
                    self._dispatch()
                else:
                    assert isinstance(event, RequestHead)
                    if self._on_head(event):
                        # No body announced: the request is complete with its head.
                        reader.end_bodiless()
                        self._dispatch()
        # A name per clause: compiled, a name has one type in the whole function.
        except _PhaseRefusal as refusal:
            self._refuse(refusal.status, refusal.reason, refusal.answer)
        except RefusedRequest as refused:
            self._refuse(refused.status, refused.reason, received=refused.received)
        except ClientError as exc:
            self._refuse(exc.status, exc.reason)
        except SpoolError as failed:
            # Our fault (temp_path gone, not writable, full): 500, as nginx, and an error.
            self._refuse(500, f"request body: {failed}", level=logging.ERROR)

    def _on_head(self, head: RequestHead) -> bool:
        """Set up the request and run its phases; True when it has no body (it is complete)."""
        routes = self.router.server_for(head.host)
        self.settings = settings = routes.config.http
        path, route = routes.route(head.target)
        has_body = head.chunked or bool(head.content_length)
        body = (
            RequestBody(settings.client_body_buffer_size, self.services.config.temp_path)
            if has_body
            else _NO_BODY
        )
        # The start time feeds the access log and the metrics: no clock read without them.
        services = self.services
        started = _wall_clock() if services.time_requests else 0.0
        self.request = request = Request(
            head, route, body, self.peer_ip, started, services.request_ids.next(),
            self.peer_source, services.times_upstream,
        )  # fmt: skip
        if path is None:
            raise ClientError(400, "invalid path")
        if head.content_length is not None and head.content_length > settings.client_max_body_size:
            raise ClientError(413, "declared body too large")
        for phase in route.phases:
            verdict = phase.check(request)
            if verdict is None:
                continue
            if type(verdict) is Delay:
                request.delay = max(request.delay, verdict.seconds)
                if verdict.headers:
                    request.added_headers = [*request.added_headers, *verdict.headers]
                continue
            assert isinstance(verdict, Answer)
            if has_body:
                # Its body is not wanted: answer now and close rather than read it.
                raise _PhaseRefusal(verdict, phase.name)
            request.answer = verdict
            break
        if not has_body:
            return True
        self._enter(BODY)
        if head.expect_continue:
            self.transport.write(CONTINUE)
        return False

    def _on_body(self, data: bytes) -> None:
        assert self.request is not None
        body = self.request.body
        settings = self.settings
        if body.size + len(data) > settings.client_max_body_size:
            raise ClientError(413, "body too large")
        body.write(data)
        # mod_reqtimeout's MinRate: once client_body_timeout has passed, the body must have
        # come at this average rate (a stalled body is caught by the timer). The timer was
        # just touched to now + client_body_timeout: the difference of the two deadlines
        # is the time since the body began, with no clock read.
        elapsed = self.timer.deadline - self.body_started
        if (
            elapsed > settings.client_body_timeout
            and body.size < settings.client_body_min_rate * elapsed
        ):
            raise ClientError(408, "request body too slow")

    # --- answering ---

    def _dispatch(self) -> None:
        """The request is complete: start its handler (after a phase's delay, if any)."""
        request = self.request
        assert request is not None
        self._enter(BUSY)
        self.served += 1
        settings = self.settings
        keep_alive = (
            request.head.keep_alive
            and self.served < settings.keepalive_requests
            and settings.keepalive_timeout > 0
            and not self.services.stopping
        )
        self.out.reset(request.head, keep_alive)
        self.out.request_id = request.request_id
        if request.added_headers:
            self.out.added_headers = request.added_headers
        if request.delay > 0:
            self.delayed = self.loop.call_later(request.delay, self._after_delay)
        else:
            self._start_handler(request)

    def _after_delay(self) -> None:
        self.delayed = None
        assert self.request is not None
        self._start_handler(self.request)
        self._read()  # a handler that answered at once may leave pipelined bytes to read

    def _start_handler(self, request: Request) -> None:
        if request.answer is not None:
            self.out.send_answer(request.answer)
            responder = None
        else:
            responder = request.route.handler.start(request, self)
        if responder is None:
            self._request_done()
        else:
            self.responder = responder

    def handler_done(self) -> None:
        """Called by a responder when its response is completely written."""
        self.responder = None
        self._request_done()
        self._read()

    def abort(self) -> None:
        self.out.keep_alive = False
        self.transport.abort()

    def ports(self) -> tuple[int, int]:
        local = self.transport.get_extra_info("sockname")
        peer = self.transport.get_extra_info("peername")
        return (
            local[1] if isinstance(local, tuple) else 0,
            peer[1] if isinstance(peer, tuple) else 0,
        )

    def hand_over(self, protocol: asyncio.Protocol) -> Callable[[], None]:
        """After a 101 written whole: `protocol` owns the transport from here on.

        The request is logged (with its 101) and released now, and this object reads and
        times nothing more. `protocol` hears `connection_made`, then `data_received` with
        the bytes the client sent past the request, `eof_received` if the client had
        half-closed already, and `pause_writing` if the transport is over its high-water
        mark. Returns what to call once its connection is lost: until then the connection
        still counts for the connection phases (limits) and the worker's connections, and
        a graceful stop still waits for it and aborts it.
        """
        transport = self.transport
        out = self.out
        full = not out.writable
        self.responder = None
        self._finish_request(out.status)
        self._enter(HANDED_OVER)
        out.lost = True  # nothing more is written as HTTP
        out.writable = False
        buffered = self.reader.buf
        early = bytes(buffered)
        buffered.clear()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if early:
            protocol.data_received(early)
        if self.peer_eof:
            protocol.eof_received()
        if full:
            protocol.pause_writing()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        return self._closed

    # --- between requests ---

    def _finish_request(self, status: int) -> None:
        request = self.request
        assert request is not None
        if request.body is not _NO_BODY:
            request.body.close()
        access_log = self.services.access_log
        if access_log.enabled:
            out = self.out
            access_log.log(request, status, out.body_bytes, out.head_bytes + out.body_bytes)
        if request.route.metrics is not None:
            request.route.metrics.finished(status, request.started, self.out.body_bytes)
        self.request = None

    def _request_done(self) -> None:
        """The response is written: log it, then wait for the next request or close."""
        self._finish_request(self.out.status)
        transport = self.transport
        if transport.is_closing():
            self._enter(CLOSED)
            return
        if not self.out.keep_alive:
            transport.close()
            self._enter(CLOSED)
            return
        reader = self.reader
        reader.start_next()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        if not reader.idle:
            self._enter(HEADER)  # pipelined bytes are waiting: `_read` takes them
        elif self.peer_eof:  # the client half-closed and every request it sent is answered
            transport.close()
            self._enter(CLOSED)
        else:
            self._enter(IDLE)

    def _refuse(
        self,
        status: int,
        reason: str,
        answer: Answer | None = None,
        received: RequestHead | None = None,
        level: int = logging.INFO,
    ) -> None:
        """Answer a refused request (or connection), then linger and close.

        `received`: what the reader saw of a request it refused before making it one (its
        request line), so that the logs show it.
        """
        request = self.request
        seen = request.head if request is not None else received
        if seen is not None:
            log.log(level, "client %s: %d %s (%s)", self.peer_ip, status, reason,
                    request_line(seen))  # fmt: skip
        else:
            log.log(level, "client %s: %d %s", self.peer_ip, status, reason)
        out = self.out
        out.reset(request.head if request is not None else None, False)
        if request is None:
            route = self.router.default.not_found
            request = Request(
                received if received is not None else _UNPARSED, route, _NO_BODY,
                self.peer_ip, time.time(), self.services.request_ids.next(), self.peer_source,
            )  # fmt: skip
        out.request_id = request.request_id
        if answer is not None:
            out.send_answer(answer)
        else:
            out.send_error(status, close=True)
        self.request = request
        self._finish_request(status)
        self._enter(LINGER)
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()

    def _admit(self, phases: tuple[ConnectionPhase, ...]) -> None:
        admitted: list[ConnectionPhase] = []
        for phase in phases:
            answer = phase.accept(self.peer_ip)
            if answer is not None:
                self.admitted = tuple(admitted)
                self._refuse(answer.status, phase.name, answer)
                return
            admitted.append(phase)
        self.admitted = tuple(admitted)

    def _on_timeout(self) -> None:
        state = self.state
        if state == BODY or (state == HEADER and not self.reader.idle):
            self._refuse(408, "client timed out")
        elif state == BUSY:
            log.info("client %s: send_timeout, closing", self.peer_ip)
            self.abort()  # the client stopped reading the response
        else:
            self.transport.close()

    def close_if_idle(self) -> None:
        """For a graceful stop: drop keep-alive connections that wait for a request."""
        if self.state == IDLE or (self.state == HEADER and self.reader.idle):
            self.transport.close()

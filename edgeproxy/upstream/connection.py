"""One connection to a peer: sends a complete request, reads the response at full speed.

Everything is driven by callbacks, with no task or future per request: the exchange that
owns the connection for one request is told about each batch of response bytes
(`on_response`), a failure (`on_upstream_error`) and room to send more of a large request
body (`on_upstream_writable`). When the response is complete the connection goes back to
its pool (via `on_release`) before the exchange hears of it, whatever the client is doing.

A 101 to an upgrade request is the one response after which the connection does not go
back: the exchange hears `on_switching_protocols` and takes the transport with `detach`
(or drops it with `abort_exchange`); the pool counts it in flight until the protocol that
took it says it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from edgeproxy.errors import UpstreamError
from edgeproxy.http.codec import MalformedResponse, ResponseParser
from edgeproxy.http.events import ResponseHead
from edgeproxy.timer import LazyTimer
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.protocol import UpstreamProtocol

if TYPE_CHECKING:
    from edgeproxy.upstream._stream import Stream


class Exchange(Protocol):
    """What an UpstreamConnection reports to (the proxy handler's exchange)."""

    def on_response(self, head: ResponseHead | None, chunks: list[bytes], complete: bool) -> None:
        """A batch of the response: its head (first batch only), body pieces, and whether
        the response is complete (the connection is already released then)."""

    def on_upstream_error(self, error: UpstreamError) -> None:
        """The exchange failed; the connection is closed and released."""

    def on_upstream_writable(self) -> None:
        """The peer took what was written; more of the request body may be sent."""

    def on_switching_protocols(self, head: ResponseHead) -> None:
        """The peer answered an upgrade with this 101: `detach` the connection now (or
        `abort_exchange`); it is never reused."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(
        self,
        peer: Peer,
        protocol: UpstreamProtocol,
        on_release: Callable[[UpstreamConnection, bool], None],
        loop: asyncio.AbstractEventLoop,
        on_made: Callable[[UpstreamConnection], None] | None = None,
        on_connect_timeout: Callable[[], None] | None = None,
    ) -> None:
        self.peer = peer
        self._on_made = on_made  # told once the connection is made
        self._on_connect_timeout = on_connect_timeout  # ... or if it is not made in time
        self.protocol = protocol
        self.on_release = on_release
        self.transport: asyncio.Transport | None = None
        # The transport is our own stream (edgeproxy.upstream._stream): `close` ends it and
        # this side at once, with no connection_lost to wait for.
        self.own_stream: Stream | None = None
        self.closed = False
        self.idle_since = 0.0
        self.response_started = False  # a byte of the current response arrived
        self._reader: ResponseParser | None = None
        self._spare_reader: ResponseParser | None = None  # reused from one exchange to the next
        self._head_passed = False  # the exchange has been given the response head
        self._exchange: Exchange | None = None
        self._switched: list[bytes] | None = None  # after a 101: the bytes that followed it
        self._paused_writing = False
        self._read_timeout = 60.0
        self._timer = LazyTimer(loop, self._on_read_timeout)

    def start_connect_timer(self, timeout: float) -> None:
        """While connecting: `on_connect_timeout` unless connected within `timeout`. The
        read timer serves (no loop timer per connect); an exchange re-arms it."""
        self._timer.start(timeout)

    def not_connected(self) -> None:
        """The connect failed or was cancelled: no connection_made nor connection_lost will
        come, so the timer is let go of here (else the wheel would hold us until then)."""
        self.closed = True
        self._on_connect_timeout = None
        self._on_made = None
        self._timer.close()

    # --- used by the exchange ---

    def begin(
        self, exchange: Exchange, method: bytes, read_timeout: float, upgrade: bool = False
    ) -> None:
        """Start an exchange on this connection; then `write` the request. `upgrade`: the
        request asks for a WebSocket, so a 101 may answer it."""
        reader = self._spare_reader
        if reader is None:
            reader = self._spare_reader = self.protocol.response_parser()
        reader.reset(method, upgrade)
        self._reader = reader
        self._exchange = exchange
        self._head_passed = False
        self.response_started = False
        self._read_timeout = read_timeout
        self._timer.start(read_timeout)

    def write(self, data: bytes | bytearray) -> bool:
        """Send part of the request; False when the peer should take it before more."""
        if self.transport is None or self.closed:
            return True  # connection_lost reports the failure
        self.transport.write(data)
        # read_timeout bounds every wait on the peer, counted from our last write too.
        self._timer.touch(self._read_timeout)
        return not self._paused_writing

    def write_parts(self, head: bytes, body: list[bytes | bytearray]) -> None:
        """Send a whole request: its head and its body's pieces in one gathered write."""
        if self.transport is None or self.closed:
            return  # connection_lost reports the failure
        if body:
            self.transport.writelines([head, *body])
        else:
            self.transport.write(head)
        self._timer.touch(self._read_timeout)

    def pause_reading(self) -> None:
        """The client is behind and the spool is full: let the peer wait for us."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self._timer.stop()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self._exchange is not None:
            self.transport.resume_reading()
            self._timer.start(self._read_timeout)

    def abort_exchange(self) -> None:
        """Cut the current exchange short (client gone, retry): never reuse this connection."""
        if self._exchange is not None:
            self._switched = None
            self._end()
            self.close()
            self.on_release(self, False)

    def detach(self, protocol: asyncio.Protocol) -> Callable[[], None]:
        """After `on_switching_protocols`: `protocol` takes the transport for good.

        It hears `connection_made`, then `data_received` with what the peer sent after
        the 101, and `pause_writing` if the transport is over its high-water mark. Returns
        what to call once its connection is lost: the pool counts the connection in flight
        on its peer until then.
        """
        transport = self.transport
        early = self._switched
        assert transport is not None and early is not None and not self.closed
        self._switched = None
        self._exchange = None
        self.closed = True  # ours no more: never written, read or reused by us again
        self.transport = None
        self.own_stream = None  # (the tunnel closes it, and hears connection_lost)
        self._timer.close()
        if self._spare_reader is not None:
            self._spare_reader.close()
            self._spare_reader = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in early:
            protocol.data_received(data)
        if self._paused_writing:
            protocol.pause_writing()
        return self._tunnel_closed

    def _tunnel_closed(self) -> None:
        self.on_release(self, False)

    def close(self) -> None:
        self.closed = True
        self._timer.stop()
        stream = self.own_stream
        if stream is not None and self._exchange is None:
            # Behind gunicorn's sync workers, every connection: no Handle nor call for a
            # connection_lost a loop iteration later. (With an exchange still on, abort:
            # its connection_lost fails the exchange.)
            self.own_stream = None
            stream.discard()
            self._let_go()
        elif self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connect_timeout is not None:
            self._on_connect_timeout = None
            self._timer.suspend()  # (an exchange's `begin` re-arms it at once, cheaply)
        on_made = self._on_made
        if on_made is not None:
            self._on_made = None
            on_made(self)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            # Bytes on an idle connection: the peer is out of step; never reuse it.
            self.close()
            return
        self.response_started = True
        self._timer.touch(self._read_timeout)
        try:
            reader.feed(data)
        except MalformedResponse as exc:
            self._fail(UpstreamError("error", f"malformed response: {exc}"))
            return
        self._pass_on(reader)

    def eof_received(self) -> bool:
        reader = self._reader
        if reader is not None:
            try:
                reader.feed_eof()
            except MalformedResponse as exc:
                self._fail(UpstreamError("error", str(exc)))
                return False
            self._pass_on(reader)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.own_stream = None
        if self._exchange is not None:
            detail = f"connection lost: {exc}" if exc else "upstream closed the connection"
            self._fail(UpstreamError("error", detail))
        self._let_go()

    def _let_go(self) -> None:
        # Cut the reference cycles through the timer and the parser, so that refcounting
        # frees this connection now: left to the cyclic GC, a dead connection per request
        # (gunicorn closes each one) keeps the collector running.
        self._timer.close()
        if self._spare_reader is not None:  # (_reader is None: the exchange, if any, ended)
            self._spare_reader.close()
            self._spare_reader = None
        self.transport = None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._exchange is not None:
            self._exchange.on_upstream_writable()

    # --- internals ---

    def _pass_on(self, reader: ResponseParser) -> None:
        """Give the exchange what the last bytes completed; release us first if done."""
        head = reader.head
        exchange = self._exchange
        if head is None or exchange is None:
            return
        chunks = reader.body
        if chunks:
            reader.body = []
        complete = reader.complete
        if self._head_passed:
            if not chunks and not complete:
                return
            head = None
        else:
            self._head_passed = True
        if complete:
            if head is not None and head.status == 101:
                self._switch(exchange, head, chunks)
                return
            reusable = reader.reusable()
            self._end()
            self.on_release(self, reusable)
        exchange.on_response(head, chunks, complete)

    def _switch(self, exchange: Exchange, head: ResponseHead, early: list[bytes]) -> None:
        """A 101 (only parsed when an upgrade was asked for): the peer speaks another
        protocol from here on, so nothing more is read as HTTP; the exchange decides."""
        self._timer.stop()  # the tunnel keeps its own time
        self._reader = None
        self._switched = early
        exchange.on_switching_protocols(head)
        # Neither detached nor dropped: never left half-open. (`_exchange`, not
        # `_switched`: the compiled code would take that one as still the list set above.)
        if self._exchange is not None:
            self.abort_exchange()

    def _fail(self, error: UpstreamError) -> None:
        exchange = self._exchange
        self._end()
        self.close()
        self.on_release(self, False)
        if exchange is not None:
            exchange.on_upstream_error(error)

    def _end(self) -> None:
        self._timer.suspend()
        self._reader = None
        self._exchange = None
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _on_read_timeout(self) -> None:
        if self._exchange is not None:
            self._fail(UpstreamError("timeout", "upstream timed out"))
            return
        expired = self._on_connect_timeout
        if expired is not None:
            self._on_connect_timeout = None
            expired()

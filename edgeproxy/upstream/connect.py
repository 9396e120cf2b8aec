"""A new upstream connection in the making, for the request that asked for it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from edgeproxy.errors import UpstreamError
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.protocol import UpstreamProtocol

if TYPE_CHECKING:
    from edgeproxy.upstream._stream import Poller, Stream


class ConnectionWaiter(Protocol):
    """A request waiting for its new connection to a peer (the proxy handler's exchange)."""

    def take_connection(self, conn: UpstreamConnection) -> bool:
        """Use `conn` (a released keep-alive connection) instead; False if no longer wanted."""
        ...

    def take_new_connection(self, conn: UpstreamConnection) -> bool:
        """Use `conn`, the connection being made for it, as soon as it is made; False if no
        longer wanted (the pool keeps it then)."""
        ...

    def connect_failed(self, error: UpstreamError) -> None:
        """The connect failed or timed out (never after `take_new_connection`)."""
        ...


class PendingConnect:
    """One connect in progress, for the request that asked for it (the waiter).

    Behind gunicorn's sync workers (a connection per request) the proxy connects once per
    request, so a connect must cost little. To a peer given as an IP literal, a compiled
    build connects through the worker's Poller (edgeproxy.upstream.streams): a socket on
    its own epoll, which reports to `_stream_connected`.

    Otherwise the loop's connect coroutine is driven here by hand, with no Task (a Task
    with its steps costs more than the rest of the connect's Python side). The coroutine
    waits on one future at a time; its done callback resumes the coroutine.

    The waiter gets the connection once made (from connection_made, before the coroutine
    ends a loop iteration later: a sync gunicorn worker that accepted it waits for the
    request); a failure or the connect_timeout reaches it as `connect_failed`. `cancel`
    (the client left) ends the connect quietly.
    """

    __slots__ = ("_expired", "_loop", "_pending", "_poller", "_release", "_steps", "_stream",
                 "_timeout", "conn", "offered", "outcome", "taken", "waiter")  # fmt: skip

    def __init__(
        self,
        peer: Peer,
        waiter: ConnectionWaiter,
        protocol: UpstreamProtocol,
        release: Callable[[UpstreamConnection, bool], None],
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        poller: Poller | None = None,
    ) -> None:
        """`release`: the pool's, for the connection once made; `timeout`: connect_timeout;
        `poller`: the loop's, to connect through (the peer's address is an IP literal)."""
        self.waiter: ConnectionWaiter | None = waiter
        self._release = release
        self._loop = loop
        self._timeout = timeout
        self.conn = UpstreamConnection(peer, protocol, release, loop, self._made, self._expire)
        self.offered = False  # the waiter was offered the connection (from connection_made)
        self.taken = False  # ... and took it
        # "" while under way, then "connected", "failed" or "cancelled" (by `cancel`).
        self.outcome = ""
        self._expired = False
        self._pending: asyncio.Future[Any] | None = None  # what the coroutine waits on
        # The coroutine's await iterator: `next(steps, None)` resumes it, and its end is
        # None rather than a StopIteration raised here (whose traceback costs as much).
        self._steps: Generator[Any, None, Any] | None = None
        self._poller = poller
        self._stream: Stream | None = None  # the socket connecting, through the poller

    def start(self) -> None:
        """Begin (a failure known at once, as EMFILE, reaches the waiter from here)."""
        poller = self._poller
        if poller is not None:
            self._start_stream(poller)
            return
        loop = self._loop
        address = self.conn.peer.address
        if address.kind == "unix":
            coro = loop.create_unix_connection(self._factory, address.path)
        else:
            coro = loop.create_connection(self._factory, address.host, address.port)
        self._steps = coro.__await__()
        self.conn.start_connect_timer(self._timeout)
        self._resume(None)

    def _start_stream(self, poller: Poller) -> None:
        peer = self.conn.peer
        address = peer.address
        self.conn.start_connect_timer(self._timeout)
        try:
            stream = poller.connect(
                peer.ip_family, address.host, address.port, self._stream_connected
            )
        except OSError as os_error:
            self._failed(self._error(os_error.strerror or str(os_error)))
            return
        stream.set_protocol(self.conn)
        self._stream = stream

    def _stream_connected(self, error: int) -> None:
        stream = self._stream
        # (A stream aborted by `_stop_stream` never calls back: _stream.c drops the callback.)
        assert stream is not None
        self._stream = None
        if error:
            self._failed(self._error(os.strerror(error)))
            return
        conn = self.conn
        conn.own_stream = stream
        conn.connection_made(stream)  # the waiter takes it from here (`_made`)
        self._connected()

    def _stop_stream(self) -> bool:
        """Abort the stream still connecting, if there is one."""
        stream = self._stream
        if stream is None:
            return False
        self._stream = None
        stream.abort()
        return True

    def cancel(self) -> None:
        """The waiter no longer wants the connection: stop unless it is made already."""
        self.waiter = None
        if self._stop_stream():
            self._ended("cancelled")
            self.conn.not_connected()
        elif self._pending is not None and not self.taken:
            self._pending.cancel()  # the coroutine closes its transport and ends

    def abandon(self) -> None:
        """The waiter took another connection: this one, once made, goes to the pool."""
        self.waiter = None

    def _factory(self) -> UpstreamConnection:
        return self.conn

    def _made(self, conn: UpstreamConnection) -> None:
        # From connection_made, before the coroutine resumes.
        self.offered = True
        waiter = self.waiter
        if waiter is not None and waiter.take_new_connection(conn):
            self.waiter = None
            self.taken = True
            conn.peer.active += 1

    def _expire(self) -> None:
        if self._stop_stream():
            name = self.conn.peer.name
            self._failed(UpstreamError("timeout", f"connect to {name} timed out", retryable=True))
        elif not self.offered:
            self._expired = True
            if self._pending is not None:
                self._pending.cancel()

    def _resume(self, _done: object) -> None:
        self._pending = None
        steps = self._steps
        assert steps is not None
        try:
            waiting = next(steps, None)
        except asyncio.CancelledError:
            if self._expired:
                name = self.conn.peer.name
                self._failed(
                    UpstreamError("timeout", f"connect to {name} timed out", retryable=True)
                )
            else:
                self._ended("cancelled")
                self.conn.not_connected()
            return
        except OSError as os_error:
            detail = os_error.strerror or str(os_error)
            self._failed(self._error(detail))
            return
        except Exception as other:  # whatever else stops a connect fails it
            self._failed(self._error(repr(other)))
            return
        if waiting is None:
            self._connected()
            return
        self._pending = waiting
        waiting.add_done_callback(self._resume)

    def _error(self, detail: str) -> UpstreamError:
        return UpstreamError("error", f"connect to {self.conn.peer.name}: {detail}", retryable=True)

    def _connected(self) -> None:
        self._ended("connected")
        if self.taken:
            return
        conn = self.conn
        if not self.offered:
            self._made(conn)  # (connection_made always comes first; this is a safeguard)
            if self.taken:
                return
        # Not wanted any more (the client left, or it took a released connection): the
        # pool keeps it for the next request.
        conn.peer.active += 1
        self._release(conn, True)

    def _failed(self, error: UpstreamError) -> None:
        self._ended("failed")
        self.conn.not_connected()
        waiter = self.waiter
        self.waiter = None
        if waiter is not None:
            waiter.connect_failed(error)

    def _ended(self, outcome: str) -> None:
        self.outcome = outcome
        self._steps = None

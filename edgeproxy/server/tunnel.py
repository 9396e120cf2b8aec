"""The two connections of an upgraded request (a WebSocket), joined after the peer's 101.

The proxy hands each transport to one end of a Tunnel (DESIGN: "upgrade by handing over
the transport"); from then on the bytes are not HTTP and are relayed as they come:

- what one end reads is written to the other end's transport. When that transport is over
  its high-water mark (its end hears `pause_writing`), the reading end pauses reading
  until it drains (`resume_writing`): flow control both ways, no buffer of our own;
- an end that reads EOF half-closes the other (`write_eof`); once both directions have
  ended, both transports close;
- an end whose connection is lost closes the other: after a clean close, with what is
  still buffered written first; after a reset or an error, at once and with a reset, so
  that each side sees the other's failure as a failure;
- nothing read either way for `idle_timeout` seconds (the upstream's read_timeout) closes
  both.

Each end calls its `on_lost` callback once its own connection is lost: the client
connection's accounting (connection limits, the worker's count) and the upstream pool's
count of connections in flight on the peer end there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Final, cast

from edgeproxy.timer import LazyTimer

log = logging.getLogger("edgeproxy.proxy")

# SO_LINGER on, with a zero timeout: closing the socket then sends a reset, not a FIN.
_RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)


def _nothing() -> None:
    pass


class TunnelEnd(asyncio.Protocol):
    """One side of the tunnel: the protocol of one transport."""

    def __init__(self, tunnel: Tunnel, side: str) -> None:
        self.tunnel = tunnel
        self.side = side  # "client" or "upstream", for the log
        self.transport: asyncio.Transport | None = None
        self.other: TunnelEnd = self  # set by the Tunnel
        self.pending: list[bytes] = []  # read before the other end had its transport
        self.full = False  # our transport is over its high-water mark
        self.eof = False  # this side has sent EOF
        self.lost = False
        self.on_lost: Callable[[], None] = _nothing

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        other = self.other
        if other.full:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()  # whatever the HTTP side had paused
        if other.pending:
            # The other end started first: what it read waited for this transport.
            for data in other.pending:
                self.transport.write(data)
            other.pending = []
        if other.eof and self.transport.can_write_eof():
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.tunnel.timer.touch(self.tunnel.idle_timeout)
        other = self.other
        transport = other.transport
        if transport is None:
            if not other.lost:  # (not attached yet; once it is lost, nobody will read)
                self.pending.append(data)
        elif not transport.is_closing():
            transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        other = self.other
        if other.eof or other.lost:
            self.tunnel.close()
            return True
        transport = other.transport
        if transport is not None and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        return True  # the other direction goes on until its own EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.full = False
        other = self.other
        if not other.lost:
            if exc is None:
                other.close()
            else:
                log.info("tunnel %s: %s side lost: %s", self.tunnel.name, self.side, exc)
                other.reset()
        else:
            self.tunnel.timer.close()
        on_lost = self.on_lost
        self.on_lost = _nothing
        self.transport = None
        self.other = self  # the two ends refer to each other: a cycle, cut here
        on_lost()

    def pause_writing(self) -> None:
        # The other end's reads fill our transport: it waits until ours drains.
        self.full = True
        other = self.other.transport
        if other is not None and not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        self.full = False
        other = self.other.transport
        if other is not None and not other.is_closing():
            other.resume_reading()

    # --- closing ---

    def close(self) -> None:
        """Close after what is buffered for this side is written."""
        if self.transport is not None:
            self.transport.close()

    def reset(self) -> None:
        """Close at once, with a TCP reset where the transport is a TCP socket."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # already gone: the abort is all there is
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        transport.abort()


class Tunnel:
    """Joins a client and an upstream transport after a 101 (see the module docstring).

    The proxy builds it, then gives `client` and `upstream` their transports (through the
    client connection's `hand_over` and the upstream connection's `detach`, which replay
    the bytes each had read past the HTTP exchange), then sets each end's `on_lost`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout: float, name: str) -> None:
        self.name = name  # "client address -> peer", for the log
        self.idle_timeout = idle_timeout
        self.timer = LazyTimer(loop, self._on_idle)
        self.timer.start(idle_timeout)
        self.client = TunnelEnd(self, "client")
        self.upstream = TunnelEnd(self, "upstream")
        self.client.other = self.upstream
        self.upstream.other = self.client

    def close(self) -> None:
        # The timer runs on: a close the peer never lets finish is aborted by `_on_idle`.
        self.client.close()
        self.upstream.close()

    def _on_idle(self) -> None:
        log.info("tunnel %s: idle for %gs, closing", self.name, self.idle_timeout)
        for end in (self.client, self.upstream):
            transport = end.transport
            if transport is not None and transport.is_closing():
                transport.abort()  # a close not finished in all that time: nothing is read
        self.close()
        self.timer.start(self.idle_timeout)  # if these closes do not finish, they are aborted

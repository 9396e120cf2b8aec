"""A TLS listen address: what comes before the DownstreamConnection.

`TlsFront` reads a connection's first bytes. A TLS handshake (a record of type 22) is
handed to the event loop's TLS protocol, with what is left of client_header_timeout as
its handshake timeout; anything else is a client speaking plain HTTP to a TLS port, which
gets a clear 400 in plain HTTP and is closed (nginx's 497). The TLS layer is set up here
instead of by create_server(ssl=...) because only here are those first bytes seen.

Once the handshake is done, `Handshaken` looks at which server SNI chose and starts the
connection with that server's view of the address's router: a Host naming the chosen
server, none or an unknown one goes to the chosen server; a Host naming another server
of the address gets 421 Misdirected Request (RFC 9110 section 15.5.20), never that
server's content.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import dataclasses
import ssl
from collections.abc import Callable
from typing import Any, cast

import uvloop
import uvloop.loop

from edgeproxy.config.model import Location, ServerConfig
from edgeproxy.server.request import Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler
from edgeproxy.server.router import Router, ServerRoutes
from edgeproxy.server.services import ServedConnection
from edgeproxy.server.tls import AddressContexts

HANDSHAKE_RECORD = 0x16  # TLS ContentType handshake: every ClientHello starts with it
LINGER_TIMEOUT = 5.0  # nginx lingering_timeout: 5s

_PLAIN_HTTP_BODY = (
    b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n</body>\r\n</html>\r\n"
)
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_PLAIN_HTTP_BODY)
) + _PLAIN_HTTP_BODY

_MISDIRECTED = AnswerHandler(Answer(421))


def _misdirected(server: ServerRoutes) -> ServerRoutes:
    """`server`'s names, every request answered 421."""

    def route(config: ServerConfig, location: Location | None) -> Route:
        return Route(config, None, _MISDIRECTED, (), b"localhost")

    return ServerRoutes(dataclasses.replace(server.config, locations=()), route)


def pinned_routers(router: Router) -> dict[int, Router]:
    """For each server of a TLS address (by id of its config): the router a connection
    whose handshake chose that server routes with."""
    found = {}
    for chosen in router.routes:
        routes = [r if r is chosen else _misdirected(r) for r in router.routes]
        servers = [r.config for r in routes]
        found[id(chosen.config)] = Router(
            servers, _no_routes, router.connection_phases, routes=routes, default=chosen
        )
    return found


def _no_routes(config: ServerConfig, location: Location | None) -> Route:
    raise AssertionError("the routes are built already")


Connection = Callable[[Router], asyncio.Protocol]


class Handshaken(asyncio.Protocol):
    """The TLS protocol's first app protocol: replaced by the connection at once."""

    __slots__ = ("address", "connection", "routers")

    def __init__(
        self, connection: Connection, address: AddressContexts, routers: dict[int, Router]
    ) -> None:
        self.connection = connection
        self.address = address
        self.routers = routers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        chosen = self.address.chosen(transport.get_extra_info("ssl_object"))
        router = self.routers[id(chosen)] if chosen is not None else None
        if router is None:  # cannot happen: the handshake used one of our contexts
            transport.close()
            return
        inner = self.connection(router)
        transport.set_protocol(inner)
        inner.connection_made(transport)


def _tls_protocol(loop: asyncio.AbstractEventLoop) -> Any:
    # The loop's own implementation: uvloop's is compiled; asyncio's is its port.
    if isinstance(loop, uvloop.Loop):
        return getattr(uvloop.loop, "SSLProtocol")  # noqa: B009 (not in uvloop's stubs)
    return asyncio.sslproto.SSLProtocol


class TlsFront(asyncio.Protocol):
    """Until the first bytes: is it TLS at all?"""

    def __init__(
        self, accepted: Handshaken, context: ssl.SSLContext, loop: asyncio.AbstractEventLoop,
        timeout: float, connections: set[ServedConnection],
    ) -> None:  # fmt: skip
        self.accepted = accepted
        # Counted among the worker's connections until the handshake ends (then the
        # connection counts itself): worker_connections bounds handshakes too, and a
        # graceful stop drops those still under way.
        self.connections = connections
        self.context = context
        self.loop = loop
        self.timeout = timeout
        self.deadline = 0.0
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False  # plain HTTP was answered with 400: lingering until closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.deadline = self.loop.time() + self.timeout
        self.timer = self.loop.call_at(self.deadline, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.refused:
            return  # the rest of a plain request: dropped while we linger
        self._stop()
        if data[0] != HANDSHAKE_RECORD:
            self._refuse_plain_http(transport)
            return
        waiter = self.loop.create_future()
        # A failed handshake is the client's business (logged by the loop at debug level).
        waiter.add_done_callback(self._handshake_done)
        tls = _tls_protocol(self.loop)(
            self.loop, self.accepted, self.context, waiter, server_side=True,
            ssl_handshake_timeout=max(self.deadline - self.loop.time(), 0.001),
        )  # fmt: skip
        transport.set_protocol(tls)
        tls.connection_made(transport)
        # The bytes read here are the handshake's first: the TLS protocol reads into its
        # own buffer.
        buffer = tls.get_buffer(len(data))
        size = min(len(buffer), len(data))
        buffer[:size] = data[:size]
        tls.buffer_updated(size)
        if size < len(data):  # its buffer is larger than one read; but never assume
            asyncio.protocols._feed_data_to_buffered_proto(tls, data[size:])  # type: ignore[attr-defined]

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        self.connections.discard(self)
        if not waiter.cancelled():
            waiter.exception()  # retrieved: a failed handshake is the client's business

    def close_if_idle(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # no request has begun: nothing is lost

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _refuse_plain_http(self, transport: asyncio.Transport) -> None:
        """Answer, then read and drop what the client still sends until it closes (or
        LINGER_TIMEOUT): closing with unread bytes would reset the connection, and the
        client might lose the answer (nginx lingers the same way)."""
        self.refused = True
        transport.write(PLAIN_HTTP_ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = self.loop.call_later(LINGER_TIMEOUT, transport.close)

    def eof_received(self) -> bool:
        return False  # the client is done: close (a refused one has had its answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._stop()

    def _stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def tls_factory(
    connection: Connection,
    router: Router,
    address: AddressContexts,
    loop: asyncio.AbstractEventLoop,
    connections: set[ServedConnection],
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of a TLS listen address. The handshake must be done within the
    default server's client_header_timeout of the connection's start."""
    timeout = router.default.config.http.client_header_timeout
    routers = pinned_routers(router)
    accepted = Handshaken(connection, address, routers)  # holds no per-connection state
    return lambda: TlsFront(accepted, address.initial, loop, timeout, connections)

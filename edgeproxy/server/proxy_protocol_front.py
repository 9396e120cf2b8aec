"""A listen address with `proxy_protocol: true`: read the PROXY header, then hand the
connection to a DownstreamConnection that sees the client named in it as its peer (for
connection limits, access rules, rate limits, X-Forwarded-For and the access log)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from edgeproxy.http.proxy_protocol import V2_MAX, ProxyHeaderError, parse
from edgeproxy.server.router import Router

log = logging.getLogger("edgeproxy.server")


class ClientTransport:
    """The connection's transport, but with the PROXY header's client as its peer."""

    __slots__ = ("_peer", "_transport", "write")

    def __init__(self, transport: asyncio.Transport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer
        self.write = transport.write  # the one call made per response, kept direct

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "client_ip_source":  # for the access log
            return "proxy_protocol"
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProxyProtocolFront(asyncio.Protocol):
    """Until the header is complete: buffers, and closes on a bad or late header."""

    def __init__(
        self, connection: Callable[[], asyncio.Protocol], loop: asyncio.AbstractEventLoop,
        timeout: float,
    ) -> None:  # fmt: skip
        self.connection = connection
        self.loop = loop
        self.timeout = timeout
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = self.loop.call_later(self.timeout, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.buf += data
        try:
            found = parse(self.buf)
        except ProxyHeaderError as exc:
            peer = transport.get_extra_info("peername")
            log.info("client %s: %s; closing", peer[0] if peer else "?", exc)
            self._stop()
            transport.abort()
            return
        if found is None:
            if len(self.buf) > V2_MAX:  # cannot happen with a well-formed length
                self._stop()
                transport.abort()
            return
        used, client = found
        rest = self.buf[used:]
        self._stop()
        inner = self.connection()
        transport.set_protocol(inner)
        if client is None:  # no client named (a health check): the balancer is the peer
            inner.connection_made(transport)
        else:
            wrapped = ClientTransport(transport, (client, 0))
            inner.connection_made(cast(asyncio.Transport, wrapped))
        if rest and not transport.is_closing():
            inner.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    def _stop(self) -> None:
        self.buf = b""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def proxy_protocol_factory(
    connection: Callable[[], asyncio.Protocol],
    router: Router,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of a `proxy_protocol` listen address; the header must arrive
    within the default server's client_header_timeout."""
    timeout = router.default.config.http.client_header_timeout
    return lambda: ProxyProtocolFront(connection, loop, timeout)

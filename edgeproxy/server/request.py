"""A complete client request, as handlers see it."""

from __future__ import annotations

from edgeproxy.config.model import Location
from edgeproxy.http.events import RequestHead
from edgeproxy.server.body import RequestBody
from edgeproxy.server.router import ServerRoutes


class Request:
    # A plain class, not a dataclass: see edgeproxy.http.events (one is built per request).
    __slots__ = (
        "body",
        "client_ip",
        "head",
        "location",
        "peer_ip",
        "server",
        "started",
        "upstream_addr",
        "upstream_status",
    )

    def __init__(
        self,
        head: RequestHead,
        server: ServerRoutes,
        location: Location | None,  # None: nothing matched (404)
        body: RequestBody,
        peer_ip: str,  # the TCP peer
        client_ip: str,  # the peer, or the client named by a trusted proxy's X-Forwarded-For
        started: float,  # wall clock, for the access log
    ) -> None:
        self.head = head
        self.server = server
        self.location = location
        self.body = body
        self.peer_ip = peer_ip
        self.client_ip = client_ip
        self.started = started
        self.upstream_addr = ""  # for the access log: the peer that answered
        self.upstream_status = 0

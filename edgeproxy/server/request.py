"""A complete client request, as handlers see it."""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy.config.model import Location
from edgeproxy.http.events import RequestHead
from edgeproxy.server.body import RequestBody
from edgeproxy.server.router import ServerRoutes


@dataclass(slots=True)
class Request:
    head: RequestHead
    server: ServerRoutes
    location: Location | None  # None: nothing matched (404)
    body: RequestBody
    peer_ip: str  # the TCP peer
    client_ip: str  # the peer, or the client named by a trusted proxy's X-Forwarded-For
    started: float  # wall clock, for the access log
    upstream_addr: str = ""  # for the access log: the peer that answered
    upstream_status: int = 0

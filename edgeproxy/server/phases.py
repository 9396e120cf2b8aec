"""Built-in request phases. A phase is built only when its keys are configured, so an
unconfigured one costs nothing per request (edgeproxy.server.routes.REQUEST_PHASES)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeproxy.config.model import IPNetwork
from edgeproxy.server.client_ip import first_value, forwarded_client, trusted
from edgeproxy.server.request import Request, Verdict


class ClientAddressPhase:
    """`trusted_proxies`: the client is who a trusted proxy's X-Forwarded-For names, and
    the request keeps the X-Request-ID a trusted proxy sent."""

    __slots__ = ("name", "trusted")

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self.name = "client address"
        self.trusted = tuple(trusted)

    def check(self, request: Request) -> Verdict:
        peer_ip = request.peer_ip
        if not trusted(peer_ip, self.trusted):
            return None
        headers = request.head.headers
        client = forwarded_client(peer_ip, headers, self.trusted)
        if client is not peer_ip:
            request.client_ip = client
            request.client_ip_source = "xff"
        given = first_value(headers, b"x-request-id")
        if given:
            request.request_id = given
        return None

"""Built-in request phases. A phase is built only when its keys are configured, so an
unconfigured one costs nothing per request (edgeproxy.server.routes.REQUEST_PHASES)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeproxy.config.model import IPNetwork
from edgeproxy.server.client_ip import client_ip
from edgeproxy.server.request import Request, Verdict


class ClientAddressPhase:
    """`trusted_proxies`: the client is who a trusted proxy's X-Forwarded-For names."""

    __slots__ = ("name", "trusted")

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self.name = "client address"
        self.trusted = tuple(trusted)

    def check(self, request: Request) -> Verdict:
        request.client_ip = client_ip(request.peer_ip, request.head.headers, self.trusted)
        return None

"""`access:` rules: the first rule that matches the client decides (nginx allow/deny)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from edgeproxy.config.model import AccessRule


class AccessRules:
    __slots__ = ("rules",)

    def __init__(self, rules: Sequence[AccessRule]) -> None:
        self.rules = tuple(rules)

    def allows(self, client_ip: str) -> bool:
        """Whether `client_ip` may in; no matching rule lets it in, as nginx does."""
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                client_ip
            )
        except ValueError:
            ip = None  # a unix-socket client: only `all` matches it
        if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 to an IPv4 rule
        for rule in self.rules:
            network = rule.network
            if network is None or (
                ip is not None and ip.version == network.version and ip in network
            ):
                return rule.allow
        return True

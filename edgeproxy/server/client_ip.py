"""The client address: the TCP peer, or what a trusted proxy says in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from edgeproxy.config.model import IPNetwork
from edgeproxy.http.events import Headers
from edgeproxy.http.headers import header_values


def _trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(peer_ip: str, headers: Headers, trusted: Sequence[IPNetwork]) -> str:
    """Walk X-Forwarded-For from the right past trusted proxies (nginx real_ip_recursive)."""
    if not trusted or not _trusted(peer_ip, trusted):
        return peer_ip
    hops = [
        hop.strip().decode("latin-1")
        for value in header_values(headers, b"x-forwarded-for")
        for hop in value.split(b",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer_ip  # garbage in the chain: trust nothing beyond the peer
    return hops[0] if hops else peer_ip

"""The client address: the TCP peer, or what a trusted proxy says in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from edgeproxy.config.model import IPNetwork
from edgeproxy.http.events import Headers
from edgeproxy.http.headers import header_values


def trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def forwarded_client(peer_ip: str, headers: Headers, trusted_networks: Sequence[IPNetwork]) -> str:
    """The client a trusted peer's X-Forwarded-For names (`peer_ip` when it names none)."""
    hops = [
        hop.strip().decode("latin-1")
        for value in header_values(headers, b"x-forwarded-for")
        for hop in value.split(b",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not trusted(hop, trusted_networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer_ip  # garbage in the chain: trust nothing beyond the peer
    return hops[0] if hops else peer_ip


def first_value(headers: Headers, wanted: bytes) -> bytes:
    """The first value of a field, b"" when absent."""
    for name, value in headers:
        if name == wanted:
            return value
    return b""

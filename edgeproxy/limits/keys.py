"""What a zone counts by: the client address, its network prefix, or a request header."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from edgeproxy.http.events import Headers
from edgeproxy.http.headers import header_values

# A zone's key of one request: None when the request has none (it is then not limited,
# as nginx skips an empty key).
KeyOf = Callable[[str, Headers], "str | None"]

IPV6_HOST_PREFIX = 64  # what one IPv6 site usually gets (RFC 6177): one "host" to a limit


def key_function(spec: str) -> KeyOf:
    """The key function of a zone's `key` (already checked by the config)."""
    if spec == "client_ip":
        return _client_ip
    if spec.startswith("header:"):
        return _header(spec[len("header:") :].encode())
    parts = [int(p) for p in spec.split("/")[1:]]
    if len(parts) == 2:
        v4, v6 = parts
    elif parts[0] <= 32:
        v4, v6 = parts[0], IPV6_HOST_PREFIX
    else:
        v4, v6 = 32, parts[0]
    return _prefix(v4, v6)


def _client_ip(client_ip: str, headers: Headers) -> str | None:
    # A unix-socket client has no address (nginx's key is then empty: not limited).
    return None if not client_ip or client_ip.startswith("unix:") else client_ip


def _header(name: bytes) -> KeyOf:
    def key(client_ip: str, headers: Headers) -> str | None:
        values = header_values(headers, name)
        return values[0].decode("latin-1") if values and values[0] else None

    return key


def _prefix(v4: int, v6: int) -> KeyOf:
    def key(client_ip: str, headers: Headers) -> str | None:
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            return None  # not an IP (a unix-socket client): not limited
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = v4 if ip.version == 4 else v6
        return str(ipaddress.ip_network((ip, prefix), strict=False))

    return key


def address_key(spec: str) -> Callable[[str], str | None]:
    """The key function of a connection zone: from the peer address alone."""
    of = key_function(spec)
    return lambda peer_ip: of(peer_ip, [])

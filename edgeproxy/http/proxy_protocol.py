"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-IO.

A TCP load balancer sends it first on each connection to say who its client is. `parse`
takes the bytes received so far and returns None (more are needed), or how many bytes the
header took and the client's address (None when the header names none: v1 UNKNOWN, v2
LOCAL, or a family other than TCP over IPv4/IPv6). A malformed header raises
ProxyHeaderError: the connection is not one we can trust and is closed.
"""

from __future__ import annotations

import ipaddress

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/protocol, length
V2_MAX = V2_HEADER + 65535
_V2_TCP4, _V2_TCP6 = 0x11, 0x21


class ProxyHeaderError(Exception):
    pass


def parse(data: bytes) -> tuple[int, str | None] | None:
    if data[:1] == b"P":
        return _v1(data)
    if data[:1] == b"\r":
        return _v2(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _v1(data: bytes) -> tuple[int, str | None] | None:
    if not V1_PREFIX.startswith(data[:6]):
        raise ProxyHeaderError("not a PROXY v1 line")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 line too long")
        return None
    fields = data[:end].split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return end + 2, None
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("bad PROXY v1 line")
    try:
        source = ipaddress.ip_address(fields[2].decode("ascii"))
        ipaddress.ip_address(fields[3].decode("ascii"))
        ports = [int(p) for p in fields[4:6]]
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("bad address in PROXY v1 line") from None
    if source.version != (4 if fields[1] == b"TCP4" else 6) or not all(
        0 <= p <= 65535 for p in ports
    ):
        raise ProxyHeaderError("bad address in PROXY v1 line")
    return end + 2, str(source)


def _v2(data: bytes) -> tuple[int, str | None] | None:
    if not V2_SIGNATURE.startswith(data[:12]):
        raise ProxyHeaderError("not a PROXY v2 header")
    if len(data) < V2_HEADER:
        return None
    version_command, family = data[12], data[13]
    if version_command >> 4 != 2 or version_command & 0x0F > 1:
        raise ProxyHeaderError("bad PROXY v2 version or command")
    total = V2_HEADER + int.from_bytes(data[14:16], "big")
    if len(data) < total:
        return None
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own connection (health checks)
        return total, None
    body = data[V2_HEADER:total]
    if family == _V2_TCP4:
        if len(body) < 12:
            raise ProxyHeaderError("short PROXY v2 IPv4 addresses")
        return total, str(ipaddress.IPv4Address(body[:4]))
    if family == _V2_TCP6:
        if len(body) < 36:
            raise ProxyHeaderError("short PROXY v2 IPv6 addresses")
        return total, str(ipaddress.IPv6Address(body[:16]))
    return total, None  # UDP, unix sockets, unspecified: no client address we can use

"""The PROXY protocol header parser, v1 and v2, fed whole and byte by byte."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from edgeproxy.http.proxy_protocol import V2_SIGNATURE, ProxyHeaderError, parse


def v2(command: int, family: int, addresses: bytes) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(addresses))
        + addresses
    )


V2_TCP4 = v2(
    1, 0x11, ipaddress.IPv4Address("203.0.113.7").packed + bytes(4) + struct.pack("!HH", 5555, 80)
)
V2_TCP6 = v2(
    1,
    0x21,
    ipaddress.IPv6Address("2001:db8::7").packed + bytes(16) + struct.pack("!HH", 5555, 80)
    + b"\x03\x00\x04abcd",  # a TLV after the addresses: skipped
)  # fmt: skip


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n", "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n", "2001:db8::7"),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        (V2_TCP4, "203.0.113.7"),
        (V2_TCP6, "2001:db8::7"),
        (v2(0, 0x00, b""), None),  # LOCAL: the balancer's own health check
        (v2(1, 0x31, bytes(216)), None),  # unix socket addresses: no client IP
    ],
)
def test_a_header_gives_its_length_and_client_whole_or_in_pieces(
    header: bytes, client: str | None
) -> None:
    rest = b"GET / HTTP/1.1\r\n"
    assert parse(header + rest) == (len(header), client)
    for cut in range(1, len(header)):
        assert parse(header[:cut]) is None, cut


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5555\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 5555 80\r\n",  # the family says IPv4
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 99999\r\n",
        b"PROXY TCP5 203.0.113.7 10.0.0.1 5555 80\r\n",
        b"PROXY TCP4 " + b"1" * 120,  # no CRLF within 107 bytes
        b"PROXX ",
        V2_SIGNATURE[:11] + b"X",
        V2_SIGNATURE + bytes([0x30, 0x11, 0, 0]),  # version 3
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 0]),  # command 2
        v2(1, 0x11, bytes(8)),  # too short for two IPv4 addresses and ports
    ],
)
def test_a_malformed_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)

"""HTTP/1.1 to the peers: a normalised request, responses read by the codec's parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from edgeproxy.http.codec import HeadCodec, ResponseParser
from edgeproxy.http.events import RequestHead
from edgeproxy.http.headers import PLAIN_CONNECTION, REQUEST_REPLACED, end_to_end_spelled

# Methods whose requests carry a body by definition: always send Content-Length, even 0.
BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})
_UPGRADE: Final = b"connection: upgrade\r\nupgrade: websocket\r\n"
# The forwarding fields every upstream protocol sends (uwsgi as HTTP_* variables): the
# names here, the values from forwarding_values in this order, so that both agree.
FORWARDING_FIELDS: Final = (
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"x-request-id",
)


def forwarding_values(
    forwarded: bytes, peer_ip: str, client_ip: str, scheme: bytes, host: bytes, request_id: bytes
) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The values of FORWARDING_FIELDS, in its order.

    `forwarded` is the X-Forwarded-For the client sent (its fields joined with ", "), to
    which the TCP peer is appended; X-Real-IP is the client as the request phases resolved
    it (`client_ip` is `peer_ip`, the same object, when no trusted proxy named another).
    """
    peer = peer_ip.encode()
    client = peer if client_ip is peer_ip else client_ip.encode()
    # len(): mypyc's truth test of bytes is a C call, its len() a field read.
    joined = forwarded + b", " + peer if len(forwarded) else peer
    return (joined, scheme, host, client, request_id)


# FORWARDING_FIELDS as they go before each value (after the previous CRLF), spelled as
# literals so that mypyc inlines them; test_uwsgi_packet checks that they are those names.
_FOR: Final = b"x-forwarded-for: "
_PROTO: Final = b"\r\nx-forwarded-proto: "
_HOST: Final = b"\r\nx-forwarded-host: "
_REAL_IP: Final = b"\r\nx-real-ip: "
_REQUEST_ID: Final = b"\r\nx-request-id: "


class Http1Protocol:
    """Our own framing (a plain Content-Length body), forwarding fields, no hop-by-hop."""

    __slots__ = ("codec", "name")

    def __init__(self, codec: HeadCodec) -> None:
        self.name = "http"
        self.codec = codec

    def encode_request_head(
        self,
        head: RequestHead,
        default_host: bytes,
        peer_ip: str,
        client_ip: str,
        body_size: int,
        keepalive: bool,
        ports: Callable[[], tuple[int, int]],  # not sent: the Host says it
        scheme: bytes,
        request_id: bytes,
    ) -> bytes:
        host = head.host if len(head.host) else default_host  # len(): see forwarding_values
        parts = [head.method, b" ", head.target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
        forwarded = b""  # the X-Forwarded-For the client sent, joined
        names_fields = False  # a Connection field names other fields: they go too
        fields = head.headers
        spelled = head.spelled
        as_sent = fields if spelled is None else spelled  # the names go as the client spelled them
        # One pass: fields passed on, X-Forwarded-For collected (end_to_end plus header_values).
        for index in range(len(fields)):
            name, value = fields[index]
            if name not in REQUEST_REPLACED:
                parts += (as_sent[index][0], b": ", value, b"\r\n")
            elif name == b"x-forwarded-for":
                forwarded = forwarded + b", " + value if forwarded else value
            elif name == b"connection" and value not in PLAIN_CONNECTION:
                names_fields = True
        if names_fields:
            del parts[6:]
            for name, value in end_to_end_spelled(fields, spelled, REQUEST_REPLACED):
                parts += (name, b": ", value, b"\r\n")
        for_, proto, for_host, real_ip, request = forwarding_values(
            forwarded, peer_ip, client_ip, scheme, host, request_id
        )
        parts += (
            _FOR, for_, _PROTO, proto, _HOST, for_host, _REAL_IP, real_ip,
            _REQUEST_ID, request, b"\r\n",
        )  # fmt: skip
        if body_size or head.method in BODY_METHODS:
            parts.append(b"content-length: %d\r\n" % body_size)
        if head.upgrade:
            parts.append(_UPGRADE)  # hop-by-hop, so dropped above: asked for again, by us
        elif not keepalive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def response_parser(self) -> ResponseParser:
        return self.codec.response_parser()

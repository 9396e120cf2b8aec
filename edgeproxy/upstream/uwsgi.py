"""The uwsgi protocol to the peers (nginx's uwsgi_pass), for uWSGI started with `--socket`.

A request is one packet: a 4-byte header (modifier1, the 16-bit little-endian size of the
variables block, modifier2), the variables as length-prefixed key/value pairs, then the
request body as it is. uWSGI answers with an HTTP/1.x status line and headers and, unless
the app framed it, ends the body by closing the connection; the response is read by the
codec's parser, so it gets the same rules, limits and buffering as an HTTP upstream, and
the connection is never reused (uWSGI closes it after each request).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import unquote_to_bytes

from edgeproxy.errors import UpstreamError
from edgeproxy.http.codec import HeadCodec, ResponseParser
from edgeproxy.http.events import RequestHead, ResponseHead
from edgeproxy.http.headers import REQUEST_REPLACED, end_to_end
from edgeproxy.upstream.http1 import BODY_METHODS, FORWARDING_FIELDS, forwarding_values

MODIFIER_WSGI = 0  # modifier1 0: a WSGI/HTTP request (uWSGI's default Python handler)
MAX_VARS = 0xFFFF  # the header's size field is 16 bits (nginx refuses more too)

# Fields that are variables of their own, or set fresh below, rather than HTTP_* copies.
# (PEP 3333: no HTTP_CONTENT_TYPE / HTTP_CONTENT_LENGTH, as gunicorn.)
_NOT_COPIED = REQUEST_REPLACED | {b"content-type"}
# Fields several values of which are joined with "; " rather than ", " (RFC 9110 5.3).
_SEMICOLON_JOINED = frozenset({b"cookie"})


class VarsTooLarge(UpstreamError):
    """The request's variables do not fit a uwsgi packet: answered 502, never sent."""

    def __init__(self, size: int) -> None:
        super().__init__("error", f"uwsgi variables block too big ({size} > {MAX_VARS} bytes)")


def encode_packet(variables: list[tuple[bytes, bytes]]) -> bytes:
    """The packet header and variables block (the body follows it as it is)."""
    parts: list[bytes] = []
    size = 0
    for key, value in variables:
        parts += (len(key).to_bytes(2, "little"), key, len(value).to_bytes(2, "little"), value)
        size += 4 + len(key) + len(value)
        if len(key) > MAX_VARS or len(value) > MAX_VARS:
            raise VarsTooLarge(max(len(key), len(value)))
    if size > MAX_VARS:
        raise VarsTooLarge(size)
    header = bytes((MODIFIER_WSGI,)) + size.to_bytes(2, "little") + bytes((0,))
    return header + b"".join(parts)


def decode_packet(packet: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The variables and body of a packet (for tests and tools; the proxy only encodes)."""
    if len(packet) < 4:
        raise ValueError("short uwsgi header")
    size = int.from_bytes(packet[1:3], "little")
    end = 4 + size
    if len(packet) < end:
        raise ValueError("short uwsgi variables block")
    variables = []
    at = 4
    while at < end:
        key_len = int.from_bytes(packet[at : at + 2], "little")
        key = packet[at + 2 : at + 2 + key_len]
        at += 2 + key_len
        value_len = int.from_bytes(packet[at : at + 2], "little")
        value = packet[at + 2 : at + 2 + value_len]
        at += 2 + value_len
        variables.append((key, value))
    if at != end:
        raise ValueError("variables overrun the block")
    return variables, packet[end:]


def split_host(host: bytes) -> tuple[bytes, bytes]:
    """`name:port`, `[v6]:port` or a bare name -> (name, port or b"")."""
    if host.startswith(b"["):
        close = host.find(b"]")
        return host[: close + 1], host[close + 2 :] if close >= 0 else b""
    name, _, port = host.partition(b":")
    return name, port


def http_variable(name: bytes) -> bytes:
    """`x-forwarded-for` -> `HTTP_X_FORWARDED_FOR` (names with `_` never get here)."""
    return b"HTTP_" + name.upper().replace(b"-", b"_")


_FORWARDING_VARIABLES: Final = tuple(http_variable(name) for name in FORWARDING_FIELDS)


class UwsgiProtocol:
    """WSGI variables built from the request head, the forwarding fields as HTTP_*."""

    __slots__ = ("codec", "name")

    def __init__(self, codec: HeadCodec) -> None:
        self.name = "uwsgi"
        self.codec = codec

    def encode_request_head(
        self,
        head: RequestHead,
        default_host: bytes,
        peer_ip: str,
        client_ip: str,
        body_size: int,
        keepalive: bool,
        ports: Callable[[], tuple[int, int]],
        scheme: bytes,
        request_id: bytes,
    ) -> bytes:
        host = head.host or default_host
        target = head.target
        path, _, query = target.partition(b"?")
        server_name, host_port = split_host(host)
        server_port, peer_port = ports()
        content_type = b""
        forwarded = b""  # the X-Forwarded-For the client sent, joined
        fields: dict[bytes, bytes] = {}  # HTTP_* -> value, several values joined
        for name, value in end_to_end(head.headers, REQUEST_REPLACED):
            if name == b"content-type":
                content_type = value
                continue
            key = http_variable(name)
            seen = fields.get(key)
            if seen is None:
                fields[key] = value
            else:
                fields[key] = seen + (b"; " if name in _SEMICOLON_JOINED else b", ") + value
        for name, value in head.headers:
            if name == b"x-forwarded-for":
                forwarded = forwarded + b", " + value if forwarded else value
        forwarding = forwarding_values(forwarded, peer_ip, client_ip, scheme, host, request_id)
        client = forwarding[3]  # X-Real-IP's value
        variables = [
            (b"REQUEST_METHOD", head.method),
            (b"REQUEST_URI", target),
            (b"PATH_INFO", unquote_to_bytes(path)),
            (b"QUERY_STRING", query),
            (b"SERVER_PROTOCOL", b"HTTP/" + head.version),
            (b"SERVER_NAME", server_name),
            # A unix listener has no port: the one the client addressed (WSGI needs one).
            (b"SERVER_PORT", b"%d" % server_port if server_port else host_port or b"80"),
            (b"REMOTE_ADDR", client),
            # The port is the TCP peer's: meaningless for a client named by a trusted proxy.
            (b"REMOTE_PORT", b"%d" % (peer_port if client_ip is peer_ip else 0)),
            (b"HTTP_HOST", host),
        ]
        if scheme == b"https":  # as nginx's uwsgi_params: HTTPS=on makes wsgi.url_scheme https
            variables.append((b"HTTPS", b"on"))
        if content_type:
            variables.append((b"CONTENT_TYPE", content_type))
        if body_size or head.method in BODY_METHODS:
            variables.append((b"CONTENT_LENGTH", b"%d" % body_size))
        variables += fields.items()
        variables += zip(_FORWARDING_VARIABLES, forwarding, strict=True)
        return encode_packet(variables)

    def response_parser(self) -> ResponseParser:
        return OneResponseParser(self.codec.response_parser())


class OneResponseParser:
    """The codec's response parser, for a connection that serves one response only."""

    __slots__ = ("parser",)

    def __init__(self, parser: ResponseParser) -> None:
        self.parser = parser

    # Properties with setters: the ResponseParser interface declares plain attributes.
    @property
    def head(self) -> ResponseHead | None:
        return self.parser.head

    @head.setter
    def head(self, head: ResponseHead | None) -> None:
        self.parser.head = head

    @property
    def body(self) -> list[bytes]:
        return self.parser.body

    @body.setter
    def body(self, chunks: list[bytes]) -> None:
        self.parser.body = chunks

    @property
    def complete(self) -> bool:
        return self.parser.complete

    @complete.setter
    def complete(self, complete: bool) -> None:
        self.parser.complete = complete

    def reset(self, request_method: bytes, upgrade: bool = False) -> None:
        # uwsgi requests never ask for an upgrade (the encoder sends no Upgrade field), so
        # a 101 from uWSGI stays a malformed answer, as for any request that did not ask.
        self.parser.reset(request_method, False)

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def feed_eof(self) -> None:
        self.parser.feed_eof()

    def reusable(self) -> bool:
        return False  # uWSGI closes the connection after each response

    def close(self) -> None:
        self.parser.close()

"""Upgrades in the codec layer, on every codec: which requests are WebSocket upgrades (the
shared rules), how they go upstream, and where the response parsers stop after a 101."""

from __future__ import annotations

import pytest

from edgeproxy.errors import ClientError
from edgeproxy.http.codec import CODECS, HeadCodec, MalformedResponse, ResponseParser
from edgeproxy.upstream.http1 import Http1Protocol
from tests.unit.codec_helpers import MODES, pieces, read_message

WEBSOCKET = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"


@pytest.fixture
def codec(http_parser: str) -> HeadCodec:
    return CODECS[http_parser]()


def request(fields: bytes, line: bytes = b"GET /ws HTTP/1.1") -> bytes:
    return line + b"\r\nHost: a\r\n" + fields + b"\r\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fields",
    [
        WEBSOCKET,
        b"Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n",
        b"connection: upgrade\r\nupgrade: websocket\r\nContent-Length: 0\r\n",
    ],
    ids=["plain", "listed-with-keep-alive", "zero-length"],
)
def test_a_websocket_upgrade_is_marked(codec: HeadCodec, fields: bytes, mode: str) -> None:
    head, body = read_message(codec, request(fields), mode)
    assert head.upgrade and body == b""


@pytest.mark.parametrize(
    "data",
    [
        request(b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AA\r\n"),
        request(b"Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n"),
        request(b"Upgrade: websocket\r\n"),  # Connection does not list it: not an upgrade
        request(b"Connection: keep-alive\r\nUpgrade: websocket\r\n"),
        request(WEBSOCKET, b"GET /ws HTTP/1.0"),  # RFC 9110 7.8: ignored in HTTP/1.0
    ],
    ids=["h2c", "several", "no-connection", "not-listed", "http10"],
)
def test_other_upgrades_are_ignored(codec: HeadCodec, data: bytes) -> None:
    head, _ = read_message(codec, data, "whole")
    assert not head.upgrade


@pytest.mark.parametrize(
    "data",
    [
        request(WEBSOCKET + b"Content-Length: 3\r\n") + b"abc",
        request(WEBSOCKET + b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
        request(WEBSOCKET + b"Content-Length: 0\r\n", b"POST /ws HTTP/1.1"),
    ],
    ids=["length", "chunked", "post"],
)
def test_a_websocket_upgrade_with_a_body_or_another_method_is_400(
    codec: HeadCodec, data: bytes
) -> None:
    with pytest.raises(ClientError) as caught:
        read_message(codec, data, "whole")
    assert caught.value.status == 400


def test_the_upstream_is_asked_for_the_upgrade(codec: HeadCodec) -> None:
    head, _ = read_message(codec, request(WEBSOCKET + b"Sec-WebSocket-Key: k\r\n"), "whole")
    sent = Http1Protocol(codec).encode_request_head(
        head, b"a", "1.2.3.4", "1.2.3.4", 0, False, no_ports, b"http", b"id"
    )
    lines = sent.split(b"\r\n")
    assert b"connection: upgrade" in lines and b"upgrade: websocket" in lines
    assert b"Sec-WebSocket-Key: k" in lines  # (spelled as the client sent it)
    assert b"connection: close" not in lines  # not even with keep-alive off
    plain, _ = read_message(codec, request(b"Upgrade: websocket\r\n"), "whole")
    sent = Http1Protocol(codec).encode_request_head(
        plain, b"a", "1.2.3.4", "1.2.3.4", 0, False, no_ports, b"http", b"id"
    )
    assert b"upgrade" not in sent.lower()


def no_ports() -> tuple[int, int]:
    return (0, 0)  # HTTP/1.1 upstreams are not told the ports


# --- the response parsers ---

SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@pytest.fixture
def parser(http_parser: str) -> ResponseParser:
    return CODECS[http_parser]().response_parser()


@pytest.mark.parametrize("mode", ["whole", "bytes"])
@pytest.mark.parametrize("after", [b"", b"\x81\x02hi", b"HTTP/1.1 200 OK\r\n\r\n"])
def test_a_101_asked_for_ends_the_response_at_its_head(
    parser: ResponseParser, mode: str, after: bytes
) -> None:
    """The bytes of the read that completed the head and came after it are handed on; the
    connection gives later reads to the new protocol directly, never to the parser."""
    parser.reset(b"GET", upgrade=True)
    data = SWITCHED + after
    fed = 0
    for piece in pieces(data, mode):
        parser.feed(piece)
        fed += len(piece)
        if parser.complete:
            break
    taken = b"".join(parser.body) + data[fed:]
    assert parser.complete and not parser.reusable()
    head = parser.head
    assert head is not None and head.status == 101
    assert (b"upgrade", b"websocket") in head.headers
    assert taken == after  # whatever follows is the new protocol's, untouched


def test_a_101_not_asked_for_is_malformed(parser: ResponseParser) -> None:
    parser.reset(b"GET")
    with pytest.raises(MalformedResponse):
        parser.feed(SWITCHED)


def test_a_refused_upgrade_is_an_ordinary_response(parser: ResponseParser) -> None:
    parser.reset(b"GET", upgrade=True)
    parser.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert parser.complete and parser.reusable()
    assert parser.head is not None and parser.head.status == 403 and parser.body == [b"no"]
    parser.reset(b"GET")  # and the parser serves the next response as usual
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk")
    assert parser.complete and parser.body == [b"k"]

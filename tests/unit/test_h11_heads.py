"""The two ways the h11 codec has of parsing a head with h11 (edgeproxy.http.h11_heads):
through h11's head readers directly, and through a new h11.Connection per head, give the
same event or the same error for every head of the request corpus and for response heads."""

from __future__ import annotations

from pathlib import Path

import h11
import pytest

from edgeproxy.http import h11_heads

CORPUS = Path(__file__).parent.parent / "corpus"
REQUEST_HEADS = sorted(CORPUS.glob("*/*.http"))
RESPONSE_HEADS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    b"HTTP/1.1 204 \r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 1xx Odd\r\n\r\n",
    b"HTTP\r\n\r\n",
    b"NOTHTTP 200 OK\r\n\r\n",
]


def outcome(read: object, head: bytes) -> object:
    """What one way of parsing answers: the event's parts, or the error's message."""
    assert callable(read)
    try:
        event = read(head)
    except h11.ProtocolError as exc:
        return ("error", str(exc))
    if isinstance(event, h11.Request):
        return (event.method, event.target, event.http_version, event.headers.raw_items())
    if isinstance(event, h11.InformationalResponse | h11.Response):
        kind = type(event).__name__
        return (kind, event.status_code, event.reason, event.http_version, list(event.headers))
    return event


def test_the_installed_h11_has_the_head_readers() -> None:
    # Should this fail after an h11 upgrade, heads go through a Connection each, which is
    # correct but slower: find h11's readers again, or accept the cost.
    assert h11_heads.DIRECT


@pytest.mark.parametrize("path", REQUEST_HEADS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_request_heads_parse_the_same_both_ways(path: Path) -> None:
    data = path.read_bytes().lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    head = data[: end + 4] if end >= 0 else data + b"\r\n\r\n"
    directly = outcome(h11_heads.read_request_head, head)
    assert directly == outcome(h11_heads.request_through_connection, head)


@pytest.mark.parametrize("head", RESPONSE_HEADS)
def test_response_heads_parse_the_same_both_ways(head: bytes) -> None:
    directly = outcome(h11_heads.read_response_head, head)
    assert directly == outcome(h11_heads.response_through_connection, head)

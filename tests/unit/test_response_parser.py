"""Every codec's upstream response parser gives the same answers, whole or byte by byte."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from edgeproxy.http.codec import CODECS, MalformedResponse, ResponseParser
from edgeproxy.http.httptools_response import Fields, split_head
from tests.unit.codec_helpers import pieces


@pytest.fixture
def parser(http_parser: str) -> ResponseParser:
    """The response parser of the codec under test (tests/conftest.py: one run per codec)."""
    return CODECS[http_parser]().response_parser()


def read(parser: ResponseParser, data: bytes, whole: bool, method: bytes = b"GET") -> bytes:
    """Feed `data` as the response to `method`; the body bytes taken out along the way."""
    parser.reset(method)
    body = b""
    for piece in pieces(data, "whole" if whole else "bytes"):
        parser.feed(piece)
        body += b"".join(parser.body)
        parser.body = []
    return body


WAYS = pytest.mark.parametrize("whole", [True, False], ids=["whole", "bytes"])


@WAYS
def test_content_length_response(parser: ResponseParser, whole: bool) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    assert read(parser, data, whole) == b"hello"
    assert parser.complete and parser.reusable()
    head = parser.head
    assert head is not None
    assert (head.status, head.reason, head.version) == (200, b"OK", b"1.1")
    assert head.headers == [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    assert head.content_length == 5 and not head.chunked


@WAYS
def test_field_names_are_also_kept_as_spelled(parser: ResponseParser, whole: bool) -> None:
    data = (
        b"HTTP/1.1 103 Early Hints\r\nLINK: </a.css>\r\n\r\n"
        b'HTTP/1.1 200 OK\r\nX-Custom-Header: a\r\nETAG: "v"\r\ncontent-length: 2\r\n\r\nok'
    )
    assert read(parser, data, whole) == b"ok"
    head = parser.head
    assert head is not None
    assert head.headers == [
        (b"x-custom-header", b"a"),
        (b"etag", b'"v"'),
        (b"content-length", b"2"),
    ]
    assert head.spelled == [
        (b"X-Custom-Header", b"a"),
        (b"ETAG", b'"v"'),
        (b"content-length", b"2"),
    ]


@WAYS
def test_chunked_response_drops_trailers(parser: ResponseParser, whole: bool) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n5;ext=1\r\nde\r\nf\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert read(parser, data, whole) == b"abcde\r\nf"
    assert parser.complete and parser.reusable()
    assert parser.head is not None and parser.head.chunked


@WAYS
def test_body_until_close(parser: ResponseParser, whole: bool) -> None:
    assert read(parser, b"HTTP/1.1 200 OK\r\n\r\nstream", whole) == b"stream"
    assert not parser.complete
    parser.feed_eof()
    assert parser.complete and not parser.reusable()


@WAYS
@pytest.mark.parametrize(
    ("method", "data"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
    ],
)
def test_responses_without_a_body(
    parser: ResponseParser, whole: bool, method: bytes, data: bytes
) -> None:
    assert read(parser, data, whole, method) == b""
    assert parser.complete and parser.reusable()


@WAYS
def test_interim_responses_are_skipped(parser: ResponseParser, whole: bool) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    assert read(parser, data, whole) == b"ok"
    assert parser.head is not None and parser.head.status == 201
    assert parser.complete


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        # Both framings: the body follows chunked, and the connection is not trusted again.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        # Bytes after the response: the peer is out of step.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00garbage",
    ],
    ids=["close", "http10", "cl-and-te", "extra-response", "extra-garbage"],
)
def test_not_reusable(parser: ResponseParser, data: bytes) -> None:
    assert read(parser, data, True) == b"ok"
    assert parser.complete and not parser.reusable()


@WAYS
def test_bytes_after_a_head_response_make_it_not_reusable(
    parser: ResponseParser, whole: bool
) -> None:
    # A peer that wrongly sends a body after a HEAD answer is out of step: reusing the
    # connection would hand those bytes to the next request as its response.
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert read(parser, head, whole, b"HEAD") == b""
    assert parser.complete and parser.reusable()
    assert read(parser, head + b"hello", whole, b"HEAD") == b""
    assert parser.complete and not parser.reusable()


def test_http10_keep_alive_is_reusable(parser: ResponseParser) -> None:
    data = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    assert read(parser, data, True) == b"ok"
    assert parser.reusable()


def test_one_parser_reads_response_after_response(parser: ResponseParser) -> None:
    for method, data, body in [
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", b"a"),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b""),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n", b"b"),
        (b"GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nc", b"c"),
    ]:
        assert read(parser, data, True, method) == body
        assert parser.complete and parser.reusable()
    assert parser.head is not None and parser.head.status == 404


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Many: aaaaaaaaaa\r\n" * 1 + b"X-Many: aaaaaaaaaa\r\n" * 4000,
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"NOTHTTP 200 OK\r\n\r\n",
        b"HTTP\r\n\r\n",
        b"HTTP/1.1 1\r\n\r\n",
        b"HTTP/1.1 1xx Odd\r\n\r\n",
    ],
    ids=[
        "bad-length",
        "two-lengths",
        "101",
        "bad-chunk",
        "long-field",
        "many-fields",
        "space-in-name",
        "control-char",
        "bare-lf",
        "bad-status-line",
        "short-status-line",
        "short-status",
        "informational-not-a-number",
    ],
)
@WAYS
def test_malformed_responses(parser: ResponseParser, whole: bool, data: bytes) -> None:
    with pytest.raises(MalformedResponse):
        read(parser, data, whole)


@pytest.mark.parametrize(
    "data",
    [b"HTTP/1.1 200 OK\r\nContent-Le", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"],
    ids=["in-head", "in-body"],
)
def test_close_before_the_end(parser: ResponseParser, data: bytes) -> None:
    read(parser, data, True)
    with pytest.raises(MalformedResponse):
        parser.feed_eof()


CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize(
    "first",
    [CLOSING, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", b"HTTP/1.1 200 OK\r\nConte"],
    ids=["complete", "cut-in-body", "cut-in-head"],
)
def test_a_closed_parser_reads_the_next_connections_response(
    http_parser: str, first: bytes
) -> None:
    """A codec may hand a closed parser to the next connection (httptools keeps spares:
    behind gunicorn's sync workers each request has a connection of its own). Whatever the
    last connection left it in the middle of, the next response reads as on a new one."""
    codec = CODECS[http_parser]()
    parser = codec.response_parser()
    read(parser, first, True)
    parser.close()
    parser.close()  # closed twice (the connection lost after a detach): still one spare
    taken = [codec.response_parser(), codec.response_parser()]
    assert taken[0] is not taken[1]
    for again in taken:
        assert read(again, CLOSING, False) == b"ok"
        assert again.complete and not again.reusable()
        head = again.head
        assert head is not None and head.status == 200


def _splitters() -> list[Callable[[bytes, int, int], tuple[bytes, Fields, Fields]]]:
    """The Python split, and the C one where it is built (the compiled build)."""
    found: list[Callable[[bytes, int, int], tuple[bytes, Fields, Fields]]] = [split_head]
    try:
        from edgeproxy.http import _fields
    except ImportError:
        if os.environ.get("EDGEPROXY_EXPECT_COMPILED") == "1":
            raise
    else:
        found.append(_fields.split_head)
    return found


@pytest.mark.parametrize("split", _splitters(), ids=lambda f: f.__module__ or "c")
def test_both_head_splits_give_the_same_fields(
    split: Callable[[bytes, int, int], tuple[bytes, Fields, Fields]],
) -> None:
    prefix = b"HTTP/1.1 100 Continue\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pad:\t b c \t\r\nX-Empty:\r\n"
        b"SET-Cookie: a=b: c\r\nx-\x80: \xff"
    )
    data = prefix + head + b"\r\n\r\nbody"
    start = len(prefix)
    end = data.find(b"\r\n\r\n", start)
    assert split(data, start, end) == (
        b"HTTP/1.1 200 OK",
        [(b"content-type", b"text/plain"), (b"x-pad", b"b c"), (b"x-empty", b""),
         (b"set-cookie", b"a=b: c"), (b"x-\x80", b"\xff")],
        [(b"Content-Type", b"text/plain"), (b"X-Pad", b"b c"), (b"X-Empty", b""),
         (b"SET-Cookie", b"a=b: c"), (b"x-\x80", b"\xff")],
    )  # fmt: skip
    assert split(b"HTTP/1.1 204 No Content", 0, 23) == (b"HTTP/1.1 204 No Content", [], [])
    with pytest.raises(ValueError):
        split(b"HTTP/1.1 200 OK\r\nno colon", 0, 25)

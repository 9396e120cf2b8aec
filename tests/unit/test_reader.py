"""The request reader over every codec: a corpus of raw requests fed whole, line by line
and byte by byte must give the expected events (valid) or the expected refusal (invalid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeproxy.errors import ClientError
from edgeproxy.http.codec import CODECS, HeadCodec
from edgeproxy.http.events import END_OF_MESSAGE, NEED_DATA, Headers, RequestHead
from edgeproxy.http.reader import RequestReader
from tests.unit.codec_helpers import MAX_HEAD, MODES, comparable, read_message

CORPUS = Path(__file__).parent.parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.http"))
INVALID = sorted((CORPUS / "invalid").glob("*.http"))


@pytest.fixture
def codec(http_parser: str) -> HeadCodec:
    """A fresh codec of the kind under test (tests/conftest.py runs each test per codec)."""
    return CODECS[http_parser]()


@dataclass(frozen=True)
class Expected:
    """What a valid corpus file must parse to, written down from the file itself: a rule
    that both codecs got wrong in the same way would still fail here."""

    method: bytes
    target: bytes
    headers: Headers
    body: bytes = b""
    version: bytes = b"1.1"
    host: bytes = b"a"
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False

    def comparable(self) -> tuple[object, ...]:
        """In the order of codec_helpers.comparable (Transfer-Encoding values lowercase)."""
        return (
            self.method, self.target, self.version, self.headers, self.host,
            self.content_length, self.chunked, self.keep_alive, self.expect_continue, self.body,
        )  # fmt: skip


HOST_A = [(b"host", b"a")]
CHUNKED_A = [(b"host", b"a"), (b"transfer-encoding", b"chunked")]

# One entry per file of tests/corpus/valid (test_every_valid_file_has_its_expectation).
EXPECTED = {
    # The authority of an absolute-form target replaces Host (RFC 9112 3.2.2).
    "absolute-form": Expected(b"GET", b"/p?x", [(b"host", b"other")], host=b"example.com:8080"),
    "expect-continue": Expected(
        b"POST",
        b"/",
        [(b"host", b"a"), (b"expect", b"100-continue"), (b"content-length", b"2")],
        body=b"ok",
        content_length=2,
        expect_continue=True,
    ),
    "get-http10-no-host": Expected(b"GET", b"/", [], version=b"1.0", host=b"", keep_alive=False),
    "get-leading-crlf": Expected(b"GET", b"/", HOST_A),
    "get-simple": Expected(
        b"GET",
        b"/index.html?q=1",
        [(b"host", b"example.com"), (b"user-agent", b"t")],
        host=b"example.com",
    ),
    "header-whitespace": Expected(b"GET", b"/", [(b"host", b"a"), (b"x-pad", b"spaced value")]),
    "ipv6-host": Expected(b"GET", b"/", [(b"host", b"[::1]:8080")], host=b"[::1]:8080"),
    "options-star": Expected(b"OPTIONS", b"*", HOST_A),
    "post-chunked-ext-trailer": Expected(b"POST", b"/up", CHUNKED_A, b"hello", chunked=True),
    "post-chunked-upper-hex": Expected(b"PUT", b"/x", CHUNKED_A, b"0123456789", chunked=True),
    "post-chunked": Expected(b"POST", b"/up", CHUNKED_A, b"hello world", chunked=True),
    "post-content-length": Expected(
        b"POST",
        b"/form",
        [(b"host", b"a"), (b"content-length", b"11")],
        body=b"hello world",
        content_length=11,
    ),
    # nginx's ignore_invalid_headers: the underscore field never reaches the upstream.
    "underscore-header-dropped": Expected(b"GET", b"/", HOST_A),
}


def test_every_valid_file_has_its_expectation() -> None:
    assert sorted(EXPECTED) == sorted(path.stem for path in VALID)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_requests_parse_as_expected_in_any_pieces(
    codec: HeadCodec, path: Path, mode: str
) -> None:
    # Every codec gives the written-down result, so they also give the same one.
    parsed = comparable(*read_message(codec, path.read_bytes(), mode))
    assert parsed == EXPECTED[path.stem].comparable()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_requests_are_refused_with_their_status(
    codec: HeadCodec, path: Path, mode: str
) -> None:
    expected = int(path.stem.split("-", 1)[0])
    with pytest.raises(ClientError) as caught:
        read_message(codec, path.read_bytes(), mode)
    assert caught.value.status == expected


def test_chunked_body_is_decoded_and_trailers_dropped(codec: HeadCodec) -> None:
    head, body = read_message(
        codec, (CORPUS / "valid" / "post-chunked-ext-trailer.http").read_bytes(), "whole"
    )
    assert head.chunked and head.content_length is None
    assert body == b"hello"


def test_absolute_form_target_becomes_origin_form(codec: HeadCodec) -> None:
    head, _ = read_message(codec, (CORPUS / "valid" / "absolute-form.http").read_bytes(), "whole")
    assert head.target == b"/p?x"
    assert head.host == b"example.com:8080"


def test_underscore_headers_are_dropped(codec: HeadCodec) -> None:
    head, _ = read_message(
        codec, (CORPUS / "valid" / "underscore-header-dropped.http").read_bytes(), "whole"
    )
    assert [name for name, _ in head.headers] == [b"host"]


def test_keep_alive_rules(codec: HeadCodec) -> None:
    cases = {
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n": True,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n": False,
        b"GET / HTTP/1.0\r\n\r\n": False,
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n": True,
    }
    for data, keep_alive in cases.items():
        head, _ = read_message(codec, data, "whole")
        assert head.keep_alive is keep_alive, data


def test_pipelined_requests_come_out_one_at_a_time(codec: HeadCodec) -> None:
    reader = RequestReader(codec, MAX_HEAD)
    reader.feed(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    first = reader.next_event()
    assert isinstance(first, RequestHead) and first.target == b"/1"
    assert reader.next_event() == b"abc"
    assert reader.next_event() is END_OF_MESSAGE
    assert reader.next_event() is NEED_DATA  # nothing more until the response is done
    reader.start_next()
    second = reader.next_event()
    assert isinstance(second, RequestHead) and second.target == b"/2"


def test_body_pieces_pass_through_and_a_pipelined_request_after_them_waits(
    codec: HeadCodec,
) -> None:
    reader = RequestReader(codec, MAX_HEAD)
    reader.feed(b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n")
    assert isinstance(reader.next_event(), RequestHead)
    assert reader.next_event() is NEED_DATA
    piece = b"abcd"
    reader.feed(piece)
    assert reader.next_event() is piece  # handed on as it came, not copied
    reader.feed(b"efgGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    reader.feed(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert reader.next_event() == b"efg"
    assert reader.next_event() is END_OF_MESSAGE
    assert reader.next_event() is NEED_DATA
    for target in (b"/2", b"/3"):
        reader.start_next()
        head = reader.next_event()
        assert isinstance(head, RequestHead) and head.target == target
        assert reader.next_event() is END_OF_MESSAGE


@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_oversized_header_is_431_and_target_414(codec: HeadCodec, mode: str) -> None:
    big_header = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * MAX_HEAD + b"\r\n\r\n"
    big_target = b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    for data, status in ((big_header, 431), (big_target, 414)):
        with pytest.raises(ClientError) as caught:
            read_message(codec, data, mode)
        assert caught.value.status == status


def test_head_limit_is_enforced_before_the_end_of_the_head_arrives(codec: HeadCodec) -> None:
    reader = RequestReader(codec, 1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 2000)  # no blank line yet
    with pytest.raises(ClientError) as caught:
        reader.next_event()
    assert caught.value.status == 431


def test_a_codec_parses_head_after_head_whatever_came_before(codec: HeadCodec) -> None:
    """The httptools codec keeps one llhttp parser for every head of a worker."""
    heads = [
        b"GET /1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        b"POST /4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /6 HTTP/1.0\r\n\r\n",
    ]
    refused = b"GET /7 HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"
    for head in [*heads, refused]:
        if head is refused:
            with pytest.raises(ClientError):
                codec.parse_request_head(head)
        else:
            codec.parse_request_head(head)
        parsed = codec.parse_request_head(b"GET /next HTTP/1.1\r\nHost: b\r\nX-A: 1\r\n\r\n")
        assert (parsed.method, parsed.target, parsed.version) == (b"GET", b"/next", b"1.1")
        assert parsed.headers == [(b"host", b"b"), (b"x-a", b"1")]

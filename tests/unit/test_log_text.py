"""How bytes from the wire are shown in the error log (edgeproxy.http.logtext), and the
request line a refused request keeps for the logs (edgeproxy.http.reader.RefusedRequest)."""

from __future__ import annotations

import pytest

from edgeproxy.errors import ClientError
from edgeproxy.http.codec import CODECS
from edgeproxy.http.events import RequestHead
from edgeproxy.http.logtext import printable, readable, request_line
from edgeproxy.http.reader import RefusedRequest, RequestReader


def test_a_request_line_is_quoted_text() -> None:
    head = RequestHead(b"GET", b"/d3?a=1", b"1.1", [])
    assert request_line(head) == '"GET /d3?a=1 HTTP/1.1"'


def test_bytes_that_are_not_printable_ascii_are_escaped() -> None:
    assert printable(b"/caf\xc3\xa9") == "/caf\\xc3\\xa9"
    assert printable(bytearray(b"a\x1b[2Jb\x7f\n")) == "a\\x1b[2Jb\\x7f\\x0a"
    assert printable(b"/plain") == "/plain"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("illegal request line: bytearray(b'GET /\\xff HTTP/1.1')",
         'illegal request line: "GET /\\xff HTTP/1.1"'),
        ("Illegal header name b'X Y'", 'Illegal header name "X Y"'),
        ("malformed chunk footer: b'ab' (expected b'\\r\\n')",
         'malformed chunk footer: "ab" (expected "\\x0d\\x0a")'),
        ("herb's garden (no repr)", "herb's garden (no repr)"),
    ],
)  # fmt: skip
def test_bytes_reprs_in_a_library_message_become_text(message: str, shown: str) -> None:
    assert readable(message) == shown


def refusal(codec_name: str, raw: bytes) -> ClientError:
    reader = RequestReader(CODECS[codec_name](), 16 * 1024)
    reader.feed(raw)
    with pytest.raises(ClientError) as caught:
        reader.next_event()
    return caught.value


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x?y=1 HTTP/1.1\r\nUser-Agent: u\r\n\r\n",  # no Host
        b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /x?y=1 HTTP/2.0\r\nHost: a\r\n\r\n",  # refused 505
    ],
    ids=["missing Host", "duplicate Host", "version"],
)
def test_a_head_refused_after_a_valid_request_line_keeps_that_line(
    http_parser: str, raw: bytes
) -> None:
    error = refusal(http_parser, raw)
    assert isinstance(error, RefusedRequest)
    received = error.received
    assert (received.method, received.target) == (b"GET", b"/x?y=1")
    assert received.version == raw.split(b"\r\n")[0][-3:]
    assert error.status in (400, 505)


@pytest.mark.parametrize(
    "raw",
    [b"GET /two spaces HTTP/1.1\r\nHost: a\r\n\r\n", b"GARBAGE\r\nHost: a\r\n\r\n"],
)
def test_a_malformed_request_line_is_not_kept(http_parser: str, raw: bytes) -> None:
    error = refusal(http_parser, raw)
    assert error.status == 400
    assert not isinstance(error, RefusedRequest)

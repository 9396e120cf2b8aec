"""The shared request rules, one regression test per rule, on every codec (tests/conftest.py
runs each test once per codec): the status chosen for each is in edgeproxy.http.rules."""

from __future__ import annotations

import pytest

from edgeproxy.errors import ClientError
from edgeproxy.http.codec import CODECS, HeadCodec
from edgeproxy.http.framing import MAX_CHUNK_LINE
from edgeproxy.http.rules import check_raw_head
from tests.unit.codec_helpers import MODES, read_message, read_stream

HOST = b"Host: a\r\n"


@pytest.fixture
def codec(http_parser: str) -> HeadCodec:
    return CODECS[http_parser]()


def status_of(codec: HeadCodec, data: bytes, mode: str = "whole") -> int:
    with pytest.raises(ClientError) as caught:
        read_message(codec, data, mode)
    return caught.value.status


# --- the request line: single spaces, CRLF, nothing before it but empty lines ---

BAD_REQUEST_LINES = {
    "several-spaces": b"GET   /1 HTTP/1.1\r\n" + HOST + b"\r\n",
    "no-space-before-version": b"HEAD /2HTTP/1.1\r\n" + HOST + b"\r\n",
    "space-after-version": b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n",
    "tab-separator": b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n",
    "stray-cr-before": b"\rGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "bare-lf-before": b"\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "absolute-form-then-spaces": b"GET http://a/x" + b" " * 100 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "no-version": b"GET /\r\n" + HOST + b"\r\n",
    "bare-lf-line-ends": b"GET / HTTP/1.1\n" + b"Host: a\n\n",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data", BAD_REQUEST_LINES.values(), ids=BAD_REQUEST_LINES.keys())
def test_request_line_must_be_single_spaced_and_crlf_ended(
    codec: HeadCodec, data: bytes, mode: str
) -> None:
    assert status_of(codec, data, mode) == 400


@pytest.mark.parametrize("mode", MODES)
def test_empty_lines_before_a_request_line_are_ignored(codec: HeadCodec, mode: str) -> None:
    head, _ = read_message(codec, b"\r\n\r\nGET /x HTTP/1.1\r\n" + HOST + b"\r\n", mode)
    assert (head.method, head.target) == (b"GET", b"/x")


def test_a_bare_lf_request_after_a_good_one_is_refused(codec: HeadCodec) -> None:
    stream = b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\nHost: a\n\n"
    requests, status = read_stream(codec, [stream])
    assert [request[1] for request in requests] == [b"/1"]
    assert status == 400


# --- Content-Length: exactly one number ---


@pytest.mark.parametrize("value", [b"5, 5", b"5,5", b"5, 6", b"5,", b""])
def test_content_length_that_is_not_one_number_is_400(codec: HeadCodec, value: bytes) -> None:
    data = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + value + b"\r\n\r\nhello"
    assert status_of(codec, data) == 400


# --- methods: any upper-case token is forwarded, whichever codec parses it ---


@pytest.mark.parametrize(
    "method", [b"BREW", b"X-CUSTOM", b"FET", b"DELTE", b"M-SEARCH", b"PURGE", b"PROPFIND", b"PRI"]
)
@pytest.mark.parametrize("mode", MODES)
def test_extension_methods_are_accepted(codec: HeadCodec, method: bytes, mode: str) -> None:
    data = method + b" /x HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nok"
    head, body = read_message(codec, data, mode)
    assert (head.method, head.target, body) == (method, b"/x", b"ok")


def test_a_request_after_an_extension_method_is_parsed_as_usual(codec: HeadCodec) -> None:
    stream = b"BREW /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\r\n" + HOST + b"\r\n"
    requests, status = read_stream(codec, [stream])
    assert [(request[0], request[1]) for request in requests] == [(b"BREW", b"/1"), (b"GET", b"/2")]
    assert status is None


@pytest.mark.parametrize("method", [b"brew", b"Get", b"G(T", b"2GET", b"M.SEARCH"])
def test_methods_that_are_not_upper_case_tokens_are_400(codec: HeadCodec, method: bytes) -> None:
    assert status_of(codec, method + b" / HTTP/1.1\r\n" + HOST + b"\r\n") == 400


# --- Transfer-Encoding: one "chunked", or 501 ---


@pytest.mark.parametrize(
    "codings",
    [
        [b"identity"],
        [b"xchunked"],
        [b"gzip"],
        [b"gzip, chunked"],
        [b"chunked, gzip"],
        [b"chunked, chunked"],
        [b"chunked", b"chunked"],
    ],
    ids=["identity", "xchunked", "gzip", "gzip-chunked", "chunked-gzip", "twice", "two-fields"],
)
def test_transfer_codings_other_than_one_chunked_are_501(
    codec: HeadCodec, codings: list[bytes]
) -> None:
    fields = b"".join(b"Transfer-Encoding: " + value + b"\r\n" for value in codings)
    data = b"POST / HTTP/1.1\r\n" + HOST + fields + b"\r\n0\r\n\r\n"
    assert status_of(codec, data) == 501


@pytest.mark.parametrize(
    "fields", [b"", b",", b"chunked\r\nTransfer-Encoding: "], ids=["empty", "comma", "second-empty"]
)
def test_transfer_encoding_without_a_coding_is_400(codec: HeadCodec, fields: bytes) -> None:
    data = b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + fields + b"\r\n\r\n0\r\n\r\n"
    assert status_of(codec, data) == 400


# --- versions: HTTP/1.x read as 1.1, another major is 505, no version grammar is 400 ---


@pytest.mark.parametrize("version", [b"1.2", b"1.8", b"1.9"])
def test_a_higher_minor_version_is_read_as_http11(codec: HeadCodec, version: bytes) -> None:
    head, _ = read_message(codec, b"GET / HTTP/" + version + b"\r\n" + HOST + b"\r\n", "whole")
    assert (head.version, head.keep_alive) == (b"1.1", True)
    # ...with HTTP/1.1's rules: Host is required.
    assert status_of(codec, b"GET / HTTP/" + version + b"\r\n\r\n") == 400


@pytest.mark.parametrize("version", [b"9.1", b"2.0", b"3.0", b"0.9"])
def test_another_major_version_is_505(codec: HeadCodec, version: bytes) -> None:
    assert status_of(codec, b"GET / HTTP/" + version + b"\r\n" + HOST + b"\r\n") == 505


@pytest.mark.parametrize("version", [b"1.32", b"11", b"1.", b"a.b", b"1.1x"])
def test_a_version_outside_the_grammar_is_400(codec: HeadCodec, version: bytes) -> None:
    assert status_of(codec, b"GET / HTTP/" + version + b"\r\n" + HOST + b"\r\n") == 400


# --- chunk-size lines, Expect, fragments ---


@pytest.mark.parametrize("mode", ["whole", "bytes"])
def test_an_oversized_chunk_size_line_is_400(codec: HeadCodec, mode: str) -> None:
    line = b"5;" + b"e" * MAX_CHUNK_LINE
    data = b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + line + b"\r\n"
    assert status_of(codec, data + b"hello\r\n0\r\n\r\n", mode) == 400


@pytest.mark.parametrize(
    "fields",
    [
        b"Expect: 100-continue\r\nExpect: 100-continue\r\n",
        b"Expect: 100-continue, 100-continue\r\n",
        b"Expect: 100-continue\r\nExpect: foo\r\n",
    ],
    ids=["two-fields", "listed-twice", "another-expectation"],
)
def test_a_duplicated_expect_is_417(codec: HeadCodec, fields: bytes) -> None:
    data = b"POST / HTTP/1.1\r\n" + HOST + fields + b"Content-Length: 1\r\n\r\nx"
    assert status_of(codec, data) == 417


@pytest.mark.parametrize("target", [b"/a#b", b"/#", b"/a?q#f", b"http://h/a#b"])
def test_a_fragment_in_the_target_is_400(codec: HeadCodec, target: bytes) -> None:
    assert status_of(codec, b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n") == 400


def test_an_encoded_hash_is_not_a_fragment(codec: HeadCodec) -> None:
    head, _ = read_message(codec, b"GET /a%23b?c=%23 HTTP/1.1\r\n" + HOST + b"\r\n", "whole")
    assert head.target == b"/a%23b?c=%23"


@pytest.mark.parametrize(
    ("target", "status"),
    [(b"a:443", 405), (b"[::1]:8443", 405), (b"a/b", 400), (b"/b", 400), (b"{x}:1", 400)],
)
def test_connect_is_405_and_400_without_a_host_port_target(
    codec: HeadCodec, target: bytes, status: int
) -> None:
    assert status_of(codec, b"CONNECT " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n") == status


# --- several faults: a 400 wins, whichever fault a codec notices first; of the other
# statuses, the first in edgeproxy.http.rules' table ---

SEVERAL_FAULTS = {
    "bad-length-and-http2": b"POST / HTTP/2.0\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
    "missing-host-and-gzip": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "fragment-and-connect": b"CONNECT a:1#x HTTP/1.1\r\nHost: a\r\n\r\n",
    "two-hosts-and-expect": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nExpect: foo\r\n\r\n",
    "bad-length-and-unknown-method": b"BREW / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
    "empty-coding-and-http9": b"POST / HTTP/9.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
}


@pytest.mark.parametrize("data", SEVERAL_FAULTS.values(), ids=SEVERAL_FAULTS.keys())
def test_a_400_fault_comes_before_any_other_status(codec: HeadCodec, data: bytes) -> None:
    assert status_of(codec, data) == 400


NON_400_FAULTS = {
    "http2-and-gzip": (b"POST / HTTP/2.0\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 505),
    "connect-and-http2": (b"CONNECT a:1 HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "connect-and-gzip": (
        b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    "connect-and-expect": (b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 405),
}


@pytest.mark.parametrize(("data", "status"), NON_400_FAULTS.values(), ids=NON_400_FAULTS.keys())
def test_of_several_other_faults_the_first_in_the_table_is_answered(
    codec: HeadCodec, data: bytes, status: int
) -> None:
    assert status_of(codec, data) == status


def test_the_raw_check_finds_every_control_character_and_only_those() -> None:
    """Every byte value, alone in a field value: a control other than HTAB (CR and LF are
    line ends, checked apart) is refused, and nothing else is."""
    for byte in range(256):
        if byte in b"\r\n":
            continue
        head = b"GET / HTTP/1.1\r\nX: a" + bytes([byte]) + b"b\r\n\r\n"
        control = (byte < 0x20 and byte != 0x09) or byte == 0x7F
        problem = check_raw_head(head)
        assert problem == ("control character in message head" if control else None), byte
        assert check_raw_head(bytearray(head)) == problem

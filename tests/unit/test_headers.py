from __future__ import annotations

from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import (
    REQUEST_REPLACED,
    RESPONSE_REPLACED,
    end_to_end,
    lowercase_name,
    response_fields,
)


def test_hop_by_hop_and_connection_named_fields_are_removed() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"trailer", b"x"),
        (b"upgrade", b"h2c"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.2.3.4"),
    ]
    assert list(end_to_end(headers, REQUEST_REPLACED)) == [(b"accept", b"*/*")]


def test_response_framing_and_identity_fields_are_ours() -> None:
    headers = [
        (b"content-length", b"3"),
        (b"date", b"x"),
        (b"server", b"gunicorn"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]
    assert list(end_to_end(headers, RESPONSE_REPLACED)) == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def spelled_head(fields: list[tuple[bytes, bytes]]) -> ResponseHead:
    """A response head as the codecs make one: lowercased names, and the names as sent."""
    lowered = [(lowercase_name(name), value) for name, value in fields]
    return ResponseHead(200, b"OK", b"1.1", lowered, fields)


def test_response_fields_keep_the_upstream_spelling() -> None:
    head = spelled_head(
        [
            (b"X-Custom-Header", b"1"),
            (b"CONTENT-LENGTH", b"3"),  # ours, however spelled
            (b"Content-Type", b"text/plain"),
            (b"keep-ALIVE", b"timeout=5"),
            (b"etag", b'"x"'),
            (b"Connection", b"keep-alive"),
            (b"Set-Cookie", b"a=1"),
        ]
    )
    assert response_fields(head) == [
        (b"X-Custom-Header", b"1"),
        (b"Content-Type", b"text/plain"),
        (b"etag", b'"x"'),
        (b"Set-Cookie", b"a=1"),
    ]


def test_response_fields_drop_what_connection_names_whatever_its_spelling() -> None:
    head = spelled_head(
        [
            (b"Connection", b"keep-alive, X-Secret"),
            (b"x-SECRET", b"1"),
            (b"Date", b"x"),
            (b"Vary", b"Accept"),
        ]
    )
    assert response_fields(head) == [(b"Vary", b"Accept")]


def test_response_fields_of_a_head_without_spelling_are_lowercased() -> None:
    head = ResponseHead(200, b"OK", b"1.1", [(b"server", b"x"), (b"x-a", b"1")])
    assert response_fields(head) == [(b"x-a", b"1")]

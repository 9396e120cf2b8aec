from __future__ import annotations

from edgeproxy.http.headers import REQUEST_REPLACED, RESPONSE_REPLACED, end_to_end


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

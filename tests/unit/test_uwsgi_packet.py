"""The uwsgi request packet: its header, its variables, and the 64 KiB limit."""

from __future__ import annotations

import pytest

from edgeproxy.http.codec import CODECS
from edgeproxy.http.events import RequestHead
from edgeproxy.upstream.http1 import FORWARDING_FIELDS, Http1Protocol
from edgeproxy.upstream.uwsgi import (
    MAX_VARS,
    UwsgiProtocol,
    VarsTooLarge,
    decode_packet,
    encode_packet,
    http_variable,
    split_host,
)


def encode(
    head: RequestHead,
    body_size: int = 0,
    peer_ip: str = "192.0.2.1",
    client_ip: str | None = None,
    ports: tuple[int, int] = (8080, 54321),
    scheme: bytes = b"http",
    request_id: bytes = b"0123456789abcdef0123456789abcdef",
) -> dict[bytes, bytes]:
    protocol = UwsgiProtocol(CODECS["h11"]())
    packet = protocol.encode_request_head(
        head,
        b"default.example",
        peer_ip,
        client_ip or peer_ip,
        body_size,
        True,
        lambda: ports,
        scheme,
        request_id,
    )
    variables, rest = decode_packet(packet)
    assert rest == b""  # the body follows, sent by the proxy as it is
    keys = [key for key, _ in variables]
    assert len(keys) == len(set(keys)), "a variable given twice"
    return dict(variables)


def request(
    target: bytes, headers: list[tuple[bytes, bytes]], method: bytes = b"GET"
) -> RequestHead:
    head = RequestHead(method, target, b"1.1", headers)
    head.host = b"app.example:8443"
    return head


def test_header_is_modifiers_and_little_endian_size() -> None:
    packet = encode_packet([(b"AB", b"xyz")])
    assert packet == b"\x00\x09\x00\x00" + b"\x02\x00AB\x03\x00xyz"
    assert decode_packet(packet + b"body") == ([(b"AB", b"xyz")], b"body")


def test_request_variables() -> None:
    got = encode(request(b"/caf%C3%A9/a%2Fb?x=%20y&z", [(b"accept", b"*/*")]))
    assert got[b"REQUEST_METHOD"] == b"GET"
    assert got[b"REQUEST_URI"] == b"/caf%C3%A9/a%2Fb?x=%20y&z"
    assert got[b"PATH_INFO"] == "/café/a/b".encode()  # decoded; the query is not
    assert got[b"QUERY_STRING"] == b"x=%20y&z"
    assert got[b"SERVER_PROTOCOL"] == b"HTTP/1.1"
    assert (got[b"SERVER_NAME"], got[b"SERVER_PORT"]) == (b"app.example", b"8080")
    assert (got[b"REMOTE_ADDR"], got[b"REMOTE_PORT"]) == (b"192.0.2.1", b"54321")
    assert got[b"HTTP_HOST"] == b"app.example:8443"
    assert got[b"HTTP_ACCEPT"] == b"*/*"
    assert b"CONTENT_LENGTH" not in got and b"CONTENT_TYPE" not in got


def test_body_and_content_type() -> None:
    head = request(b"/", [(b"content-type", b"text/plain"), (b"content-length", b"5")], b"POST")
    got = encode(head, body_size=5)
    assert (got[b"CONTENT_TYPE"], got[b"CONTENT_LENGTH"]) == (b"text/plain", b"5")
    assert b"HTTP_CONTENT_TYPE" not in got and b"HTTP_CONTENT_LENGTH" not in got
    # A POST without a body still says so, as HTTP upstreams get Content-Length: 0.
    assert encode(request(b"/", [], b"POST"))[b"CONTENT_LENGTH"] == b"0"


def test_hop_by_hop_and_replaced_fields_are_not_passed() -> None:
    head = request(
        b"/",
        [
            (b"connection", b"keep-alive, x-secret"),
            (b"x-secret", b"1"),
            (b"te", b"trailers"),
            (b"keep-alive", b"timeout=5"),
            (b"host", b"app.example:8443"),
            (b"x-real-ip", b"6.6.6.6"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-for", b"198.51.100.2"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-many", b"one"),
            (b"x-many", b"two"),
        ],
    )
    got = encode(head)
    for key in (b"HTTP_CONNECTION", b"HTTP_X_SECRET", b"HTTP_TE", b"HTTP_KEEP_ALIVE"):
        assert key not in got
    assert got[b"HTTP_X_FORWARDED_FOR"] == b"198.51.100.1, 198.51.100.2, 192.0.2.1"
    assert got[b"HTTP_X_FORWARDED_PROTO"] == b"http"
    assert got[b"HTTP_X_FORWARDED_HOST"] == b"app.example:8443"
    assert got[b"HTTP_X_REAL_IP"] == b"192.0.2.1"
    assert got[b"HTTP_COOKIE"] == b"a=1; b=2"
    assert got[b"HTTP_X_MANY"] == b"one, two"


def test_client_named_by_a_trusted_proxy() -> None:
    got = encode(request(b"/", []), client_ip="203.0.113.9")
    assert got[b"REMOTE_ADDR"] == got[b"HTTP_X_REAL_IP"] == b"203.0.113.9"
    assert got[b"REMOTE_PORT"] == b"0"  # the TCP port is the proxy's, not the client's
    assert got[b"HTTP_X_FORWARDED_FOR"] == b"192.0.2.1"


def test_unix_listener_and_http10_without_host() -> None:
    head = RequestHead(b"GET", b"/", b"1.0", [])
    got = encode(head, peer_ip="unix:", ports=(0, 0))
    assert got[b"HTTP_HOST"] == got[b"SERVER_NAME"] == b"default.example"
    assert got[b"SERVER_PORT"] == b"80"
    assert got[b"SERVER_PROTOCOL"] == b"HTTP/1.0"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"a.example", (b"a.example", b"")),
        (b"a.example:81", (b"a.example", b"81")),
        (b"[::1]:82", (b"[::1]", b"82")),
        (b"[::1]", (b"[::1]", b"")),
    ],
)
def test_split_host(host: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_host(host) == expected


def test_variables_over_64k_are_refused() -> None:
    fits = [(b"HTTP_X", b"v" * (MAX_VARS - 4 - 6))]
    assert len(encode_packet(fits)) == 4 + MAX_VARS
    with pytest.raises(VarsTooLarge):
        encode_packet([*fits, (b"", b"")])
    head = request(b"/", [(b"x-big-%d" % n, b"v" * 8000) for n in range(9)])
    with pytest.raises(VarsTooLarge) as info:
        encode(head)
    assert info.value.status == 502


def test_responses_are_read_by_the_codec_and_never_reused() -> None:
    for codec in CODECS.values():
        parser = UwsgiProtocol(codec()).response_parser()
        parser.reset(b"GET")
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert parser.head is not None and parser.head.status == 200
        assert (parser.body, parser.complete, parser.reusable()) == ([b"ok"], True, False)
        parser.reset(b"GET")
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\nuntil")
        parser.body = []
        assert not parser.complete
        parser.feed_eof()
        assert parser.complete and not parser.reusable()


def test_a_tls_client_is_https_to_the_app() -> None:
    head = request(b"/", [(b"host", b"app.example"), (b"x-forwarded-proto", b"http")])
    got = encode(head, scheme=b"https")
    assert got[b"HTTPS"] == b"on"  # uWSGI makes wsgi.url_scheme "https" of it
    assert got[b"HTTP_X_FORWARDED_PROTO"] == b"https"
    plain = encode(head)
    assert b"HTTPS" not in plain
    assert plain[b"HTTP_X_FORWARDED_PROTO"] == b"http"


@pytest.mark.parametrize("client_ip", [None, "203.0.113.9"])
def test_the_forwarding_fields_are_those_http1_sends(client_ip: str | None) -> None:
    head = request(b"/", [(b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2")])
    variables = encode(head, client_ip=client_ip, scheme=b"https")
    sent = Http1Protocol(CODECS["h11"]()).encode_request_head(
        head, b"default.example", "192.0.2.1", client_ip or "192.0.2.1", 0, True,
        lambda: (8080, 54321), b"https", b"0123456789abcdef0123456789abcdef",
    )  # fmt: skip
    fields = dict(line.split(b": ", 1) for line in sent.split(b"\r\n")[1:] if b": " in line)
    as_http1 = {name: fields[name] for name in FORWARDING_FIELDS}
    as_uwsgi = {name: variables[http_variable(name)] for name in FORWARDING_FIELDS}
    assert as_uwsgi == as_http1
    assert as_http1[b"x-forwarded-for"] == b"10.0.0.1, 10.0.0.2, 192.0.2.1"
    assert as_http1[b"x-real-ip"] == (client_ip or "192.0.2.1").encode()
    assert variables[b"REMOTE_ADDR"] == as_http1[b"x-real-ip"]

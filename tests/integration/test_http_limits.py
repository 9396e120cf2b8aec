"""Client-side limits, timeouts and malformed input, through real sockets.

A refused request is answered with its status and a closed connection, and never reaches
an upstream: the recording upstream below counts every connection made to it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Proxy
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client, RecordingUpstream, get

LIMITS = """
client_header_buffer_size: 1k
client_max_body_size: 1k
client_header_timeout: 300ms
client_body_timeout: 300ms
"""


@pytest.fixture
async def proxy(start_proxy, recorder: RecordingUpstream) -> Proxy:
    return await start_proxy(proxy_yaml([recorder.address], http=LIMITS, upstream="keepalive: 0"))


async def refused(proxy: Proxy, request: bytes, status: int) -> None:
    """`request` gets `status` and a closed connection."""
    client = await Client.connect(proxy.port)
    response = await client.exchange(request)
    assert response.status == status, response
    assert response.get("connection") == "close"
    await client.eof()


async def assert_never_forwarded(proxy: Proxy, recorder: RecordingUpstream) -> None:
    """Nothing reached the upstream, and the upstream is reachable (so that means something)."""
    assert recorder.connections == 0, recorder.requests
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/after"))
    assert response.status == 200 and response.body == b"ok"
    assert len(recorder.requests) == 1
    assert recorder.requests[0].startswith(b"GET /after HTTP/1.1\r\n")


# --- size limits ---


async def test_header_too_large_gets_431(proxy, recorder):
    await refused(proxy, get("/", extra=f"X-Big: {'a' * 2000}\r\n"), 431)
    await assert_never_forwarded(proxy, recorder)


async def test_header_too_large_in_small_pieces_gets_431(proxy, recorder):
    client = await Client.connect(proxy.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    for _ in range(20):  # 20 x 100 bytes > 1k, each read below the limit on its own
        if client.reader.at_eof():
            break
        try:
            await client.send(b"X-Piece: " + b"p" * 89 + b"\r\n")
        except ConnectionError:
            break
    response = await client.response()
    assert response.status == 431
    await client.eof()
    await assert_never_forwarded(proxy, recorder)


def head_of_size(size: int) -> bytes:
    base = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n"
    return base[:-4] + b"p" * (size - len(base)) + b"\r\n\r\n"


async def test_header_buffer_size_boundary(proxy, recorder):
    client = await Client.connect(proxy.port)
    assert len(head_of_size(1024)) == 1024
    assert (await client.exchange(head_of_size(1024))).status == 200
    assert (await client.exchange(head_of_size(1025))).status == 431
    await client.eof()
    assert len(recorder.requests) == 1


async def test_request_target_too_long_gets_414(proxy, recorder):
    await refused(proxy, get("/" + "t" * 2000), 414)
    await assert_never_forwarded(proxy, recorder)


async def test_declared_body_too_large_gets_413(proxy, recorder):
    await refused(proxy, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n", 413)
    await assert_never_forwarded(proxy, recorder)


async def test_chunked_body_too_large_gets_413(proxy, recorder):
    chunk = b"x" * 600
    request = (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"258\r\n" + chunk + b"\r\n"
        + b"258\r\n" + chunk + b"\r\n0\r\n\r\n"
    )  # fmt: skip
    await refused(proxy, request, 413)
    await assert_never_forwarded(proxy, recorder)


async def test_too_large_body_sent_at_once_still_gets_413(proxy, recorder):
    """The client sends head and body without waiting; it must read the 413, not a reset."""
    client = await Client.connect(proxy.port)
    body = b"z" * 300_000
    client.writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
    client.writer.write(body)
    response = await client.response()
    assert response.status == 413
    await client.eof()
    assert recorder.connections == 0


async def test_chunked_body_at_the_limit_is_accepted(proxy, recorder):
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"400\r\n" + b"c" * 1024 + b"\r\n0\r\n\r\n"
    )
    assert response.status == 200
    head, _, body = recorder.requests[0].partition(b"\r\n\r\n")
    assert b"\r\ncontent-length: 1024" in head.lower()
    assert body == b"c" * 1024


async def test_body_at_the_limit_is_accepted(proxy, recorder):
    client = await Client.connect(proxy.port)
    body = b"b" * 1024
    response = await client.exchange(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + body
    )
    assert response.status == 200
    assert recorder.requests[0].endswith(b"\r\n\r\n" + body)


# --- timeouts ---
#
# The timer wheel fires a timeout up to one RESOLUTION (0.1 s) late, never early. So each
# clock below starts before the proxy can start its timer (before connecting, before
# sending), a lower bound sits just under the 300 ms timeout (the margin is for the loop's
# clock against time.monotonic), and an upper bound, where one is needed, seconds above it.


async def test_header_timeout_with_half_a_head_gets_408(proxy, recorder):
    started = time.monotonic()  # the header timer starts when the connection is accepted
    client = await Client.connect(proxy.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Half")
    response = await client.response(timeout=3)
    assert response.status == 408
    assert time.monotonic() - started >= 0.25
    assert response.get("connection") == "close"
    await client.eof()
    assert recorder.connections == 0


async def test_header_timeout_after_keepalive_idle(proxy, recorder):
    client = await Client.connect(proxy.port)
    assert (await client.exchange(get("/"))).status == 200
    started = time.monotonic()
    await client.send(b"GET / HTTP/1.1\r\n")  # a second request starts, never finishes
    response = await client.response(timeout=3)
    assert response.status == 408
    assert time.monotonic() - started >= 0.25
    await client.eof()
    assert len(recorder.requests) == 1


async def test_body_timeout_with_half_a_body_gets_408(proxy, recorder):
    client = await Client.connect(proxy.port)
    started = time.monotonic()
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"h" * 50)
    response = await client.response(timeout=3)
    assert response.status == 408
    assert time.monotonic() - started >= 0.25
    assert response.get("connection") == "close"
    await client.eof()
    assert recorder.connections == 0


async def test_header_timeout_is_for_the_whole_head(proxy, recorder):
    """A slowloris that keeps sending header lines still gets 408 at client_header_timeout."""
    started = time.monotonic()
    client = await Client.connect(proxy.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")

    async def drip() -> None:
        for _ in range(30):  # 3 s of dripping if nothing stops it
            await asyncio.sleep(0.1)  # the pace of a slow client, not a wait for the server
            client.writer.write(b"X-Drip: 1\r\n")

    dripping = asyncio.create_task(drip())
    try:
        response = await client.response(timeout=3)
    finally:
        dripping.cancel()
    assert response.status == 408
    # Within the timeout (plus a margin of seconds), long before the 3 s of dripping end.
    assert 0.25 <= time.monotonic() - started < 2.0
    assert recorder.connections == 0


async def test_body_timeout_is_between_reads(proxy, recorder):
    """A slow but steady body (gaps under client_body_timeout) is received in full."""
    client = await Client.connect(proxy.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 600\r\n\r\n")
    started = time.monotonic()
    for _ in range(6):  # 6 x 120 ms: longer than the 300 ms timeout in total
        await asyncio.sleep(0.12)  # the pace of a slow client, not a wait for the server
        await client.send(b"s" * 100)
    response = await client.response()
    assert time.monotonic() - started > 0.3
    assert response.status == 200
    assert recorder.requests[0].endswith(b"\r\n\r\n" + b"s" * 600)


async def test_silent_connection_closed_at_header_timeout(proxy, recorder):
    started = time.monotonic()
    client = await Client.connect(proxy.port)
    assert await client.eof(timeout=3) == b""  # closed without a response
    assert time.monotonic() - started >= 0.25


# --- malformed input: 400 (or 405/417/501/505), a closed connection, nothing forwarded ---

HEAD = b"POST / HTTP/1.1\r\nHost: t\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

MALFORMED = {
    "cl-and-te": (HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    "bare-lf-one-line": (b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n", 400),
    "nul-in-header": (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
    "invalid-content-length": (HEAD + b"Content-Length: 12a\r\n\r\n", 400),
    "negative-content-length": (HEAD + b"Content-Length: -1\r\n\r\n", 400),
    "two-content-lengths": (HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    "chunk-size-zz": (CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (CHUNKED + b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 400),
    "chunk-size-huge": (CHUNKED + b"1" * 20 + b"\r\nabc", 400),
    "chunk-data-overrun": (CHUNKED + b"3\r\nabcdef\r\n0\r\n\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "bad-request-line": (b"GET /\r\nHost: t\r\n\r\n", 400),
    "garbage-request-line": (b"\x16\x03\x01 hello there\r\n\r\n", 400),
    "bad-version": (b"GET / HTTP/1.10\r\nHost: t\r\n\r\n", 400),
    "http2-version": (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "invalid-host": (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    "userinfo-in-absolute-target": (b"GET http://u@h/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "nul-in-path": (b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "dot-segments-above-root": (b"GET /a/../../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "bad-trailer": (CHUNKED + b"0\r\n no-colon\r\n\r\n", 400),
    "bare-lf-in-chunked": (CHUNKED + b"3\nabc\r\n0\r\n\r\n", 400),
    "space-in-field-name": (b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n", 400),
    "field-without-colon": (b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
    "content-length-plus": (HEAD + b"Content-Length: +1\r\n\r\nx", 400),
    "te-chunked-twice": (HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501),
    "te-two-lines": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "te-xchunked": (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n", 501),
    "chunk-ext-too-long": (CHUNKED + b"1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n", 400),
    "trailer-too-large": (CHUNKED + b"0\r\nX-T: " + b"t" * 2000 + b"\r\n\r\n", 400),
    "expect-unknown": (HEAD + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    "te-gzip": (HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    "te-gzip-chunked": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "connect": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
}


@pytest.mark.parametrize(("request_bytes", "status"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_refused_and_not_forwarded(proxy, recorder, request_bytes, status):
    await refused(proxy, request_bytes, status)
    await assert_never_forwarded(proxy, recorder)


async def test_malformed_request_after_a_good_one_on_the_same_connection(proxy, recorder):
    client = await Client.connect(proxy.port)
    good = await client.exchange(get("/first"))
    assert good.status == 200
    bad = await client.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n")
    assert bad.status == 400
    await client.eof()
    assert len(recorder.requests) == 1

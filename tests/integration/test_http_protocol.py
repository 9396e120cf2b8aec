"""Client-side HTTP/1.x behaviour through real sockets: keep-alive, pipelining, HTTP/1.0,
HEAD, Expect: 100-continue, chunked request bodies.

Header rules, re-framing of upstream responses and routing are in test_http_forwarding.py;
size limits, timeouts and malformed input in test_http_limits.py.
"""

from __future__ import annotations

import socket
import time

from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import (
    Client,
    echoed,
    get,
    pattern,
    sha256,
)

# --- keep-alive ---


async def test_keepalive_serves_several_requests_on_one_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    for n in range(3):
        response = await client.exchange(get(f"/echo?n={n}"))
        assert echoed(response)["query"] == f"n={n}"
        assert response.get("connection") != "close"
    response = await client.exchange(get("/", extra="Connection: close\r\n"))
    assert response.body == b"hello from a\n"
    assert response.get("connection") == "close"
    await client.eof()


async def test_keepalive_requests_limit_closes_after_the_last(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address], http="keepalive_requests: 2"))
    client = await Client.connect(proxy.port)
    first = await client.exchange(get("/"))
    assert first.status == 200 and first.get("connection") is None
    second = await client.exchange(get("/"))
    assert second.status == 200 and second.body == b"hello from a\n"
    assert second.get("connection") == "close"
    assert await client.eof() == b""


async def test_keepalive_timeout_closes_an_idle_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address], http="keepalive_timeout: 300ms"))
    client = await Client.connect(proxy.port)
    # The clock starts before the request, so before the proxy can start its idle timer
    # (which fires up to 0.1 s late, never early): the lower bound holds however long the
    # response took to read, and still tells the timeout from a close after the response.
    before_request = time.monotonic()
    response = await client.exchange(get("/"))
    assert response.status == 200 and response.get("connection") is None
    assert await client.eof(timeout=3) == b""
    assert time.monotonic() - before_request >= 0.25  # the timeout closed it, not the response


async def test_keepalive_timeout_zero_disables_keepalive(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address], http="keepalive_timeout: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/"))
    assert response.status == 200 and response.get("connection") == "close"
    assert await client.eof() == b""


async def test_half_close_after_the_request_still_gets_the_response(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(get("/echo?half"))
    client.writer.write_eof()
    assert echoed(await client.response())["query"] == "half"
    assert await client.eof() == b""


# --- pipelining ---


async def test_pipelined_requests_are_answered_in_order(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    body = b"pipelined body " * 100
    await client.send(
        get("/echo?first")
        + b"POST /echo?second HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
        + get("/echo?third")
    )
    first, second, third = [echoed(await client.response()) for _ in range(3)]
    assert (first["method"], first["query"], first["body_length"]) == ("GET", "first", 0)
    assert (second["method"], second["query"]) == ("POST", "second")
    assert second["body_sha256"] == sha256(body)
    assert (third["method"], third["query"]) == ("GET", "third")


async def test_many_pipelined_requests_in_one_send(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(b"".join(get(f"/echo?n={n}") for n in range(20)))
    for n in range(20):
        assert echoed(await client.response())["query"] == f"n={n}"


async def test_malformed_request_pipelined_after_good_ones(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(
        get("/echo?a") + get("/echo?b") + b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00\r\n\r\n"
    )
    assert echoed(await client.response())["query"] == "a"
    assert echoed(await client.response())["query"] == "b"
    assert (await client.response()).status == 400
    await client.eof()


async def test_pipelined_requests_then_half_close_are_all_answered(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(b"".join(get(f"/echo?n={n}") for n in range(3)))
    client.writer.write_eof()  # as `printf ... | nc` does
    for n in range(3):
        assert echoed(await client.response())["query"] == f"n={n}"
    assert await client.eof() == b""


async def test_connection_close_in_a_pipeline_ends_it(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(get("/echo?last", extra="Connection: close\r\n") + get("/echo?never"))
    response = await client.response()
    assert echoed(response)["query"] == "last"
    assert response.get("connection") == "close"
    assert await client.eof() == b""  # the second request is not answered


async def test_request_sent_byte_by_byte(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    client.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        b"\r\nPOST /echo?slow HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;e=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-T: 2\r\n\r\n"
    )
    for i in range(len(request)):  # CRLFs split across reads must not look like bare CRs
        await client.send(request[i : i + 1])
    data = echoed(await client.response())
    assert data["query"] == "slow"
    assert data["body_sha256"] == sha256(b"abcdefg")


# --- HTTP/1.0 ---


async def test_http10_without_keepalive_is_close_delimited(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    size = 300_000  # above proxy_buffers_size: relayed while it streams, length unknown
    response = await client.exchange(get(f"/stream/{size}", version="1.0"))
    assert response.status == 200
    assert response.version == "HTTP/1.1"
    assert response.get("transfer-encoding") is None
    assert response.framing == "close"
    assert response.body == pattern(size)


async def test_http10_small_response_then_close(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/", version="1.0"))
    assert response.status == 200 and response.body == b"hello from a\n"
    assert response.get("transfer-encoding") is None
    assert response.get("connection") in (None, "close")
    assert await client.eof() == b""


async def test_http10_keepalive_keeps_the_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    keep = "Connection: keep-alive\r\n"
    # /bytes/N has a Content-Length; a response of unknown length would have to close.
    for size in (100, 200):
        response = await client.exchange(get(f"/bytes/{size}", extra=keep, version="1.0"))
        assert response.status == 200
        assert response.get("connection") == "keep-alive"
        assert response.framing == "length"
        assert response.body == pattern(size)


async def test_http10_keepalive_with_unknown_length_closes(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    request = get("/stream/300000", extra="Connection: keep-alive\r\n", version="1.0")
    response = await client.exchange(request)
    assert response.get("connection") == "close"
    assert response.framing == "close"
    assert response.body == pattern(300_000)


async def test_http10_without_host(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    response = await client.exchange(b"GET /echo HTTP/1.0\r\n\r\n")
    assert echoed(response)["headers"]["host"] == "localhost"  # the server's default name
    await client.eof()


# --- HEAD ---


async def test_head_has_headers_and_no_body(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    await client.send(get("/bytes/1234").replace(b"GET", b"HEAD", 1))
    response = await client.response(head=True)
    assert response.status == 200
    assert response.get("content-length") == "1234"
    # The next bytes must be the next response, not a body of the HEAD one.
    after = await client.exchange(get("/"))
    assert after.status == 200 and after.body == b"hello from a\n"


async def test_head_of_a_response_without_length(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    for _ in range(2):
        await client.send(get("/stream/5000").replace(b"GET", b"HEAD", 1))
        response = await client.response(head=True)
        assert response.status == 200
    assert (await client.exchange(get("/"))).body == b"hello from a\n"


# --- Expect: 100-continue ---


async def test_expect_100_continue(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    body = b"0123456789" * 50
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\n\r\n" % len(body)
    )
    interim = await client.response()
    assert (interim.status, interim.reason) == (100, "Continue")
    final = await client.exchange(body)
    data = echoed(final)
    assert data["body_sha256"] == sha256(body)
    assert "expect" not in data["headers"]


async def test_expect_100_continue_with_too_large_body_gets_413_at_once(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address], http="client_max_body_size: 1k"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    )
    assert response.status == 413  # the first response: no 100 Continue before it
    assert response.get("connection") == "close"
    await client.eof()


# --- chunked request bodies ---


async def test_chunked_request_body_reaches_upstream_with_a_length(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b'6;quoted="a b"\r\n world\r\n'
        b"0\r\nX-Sum: 42\r\n\r\n"
    )
    data = echoed(response)
    assert data["body_sha256"] == sha256(b"hello world")
    headers = data["headers"]
    assert headers["content-length"] == "11"
    assert "transfer-encoding" not in headers
    assert "trailer" not in headers and "x-sum" not in headers
    # The connection stays in step after the trailer section.
    assert echoed(await client.exchange(get("/echo?after")))["query"] == "after"


async def test_large_chunked_body_above_the_memory_buffer(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address], http="client_body_buffer_size: 1k"))
    body = pattern(200_000)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7000]), body[i : i + 7000])
        for i in range(0, len(body), 7000)
    )
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    data = echoed(response)
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == sha256(body)
    assert data["headers"]["content-length"] == str(len(body))

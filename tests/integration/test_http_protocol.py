"""Client-side HTTP/1.x behaviour through real sockets: keep-alive, pipelining, HTTP/1.0,
HEAD, Expect: 100-continue, chunked request bodies, header rules, re-framing and routing.

Size limits, timeouts and malformed input are in test_http_limits.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Gunicorn
from tests.integration.raw_http import (
    Client,
    RecordingUpstream,
    get,
    pattern,
    proxy_yaml,
    sha256,
)


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingUpstream]:
    upstream = await RecordingUpstream().start()
    yield upstream
    upstream.close()


def echoed(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status == 200, response
    return json.loads(response.body)


# --- keep-alive ---


async def test_keepalive_serves_several_requests_on_one_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
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
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address, http="{keepalive_requests: 2}"))
    client = await Client.connect(proxy.port)
    first = await client.exchange(get("/"))
    assert first.status == 200 and first.get("connection") is None
    second = await client.exchange(get("/"))
    assert second.status == 200 and second.body == b"hello from a\n"
    assert second.get("connection") == "close"
    assert await client.eof() == b""


async def test_keepalive_timeout_closes_an_idle_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address, http="{keepalive_timeout: 300ms}"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/"))
    assert response.status == 200 and response.get("connection") is None
    idle_since = time.monotonic()
    assert await client.eof(timeout=3) == b""
    assert time.monotonic() - idle_since >= 0.25  # the timeout closed it, not the response


# --- pipelining ---


async def test_pipelined_requests_are_answered_in_order(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
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


# --- HTTP/1.0 ---


async def test_http10_without_keepalive_is_close_delimited(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    size = 300_000  # above proxy_buffers_size: relayed while it streams, length unknown
    response = await client.exchange(get(f"/stream/{size}", version="1.0"))
    assert response.status == 200
    assert response.version == "HTTP/1.1"
    assert response.get("transfer-encoding") is None
    assert response.framing == "close"
    assert response.body == pattern(size)


async def test_http10_small_response_then_close(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/", version="1.0"))
    assert response.status == 200 and response.body == b"hello from a\n"
    assert response.get("transfer-encoding") is None
    assert response.get("connection") in (None, "close")
    assert await client.eof() == b""


async def test_http10_keepalive_keeps_the_connection(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    keep = "Connection: keep-alive\r\n"
    first = await client.exchange(get("/echo?one", extra=keep, version="1.0"))
    assert echoed(first)["query"] == "one"
    assert first.get("connection") == "keep-alive"
    assert first.framing == "length"
    second = await client.exchange(get("/echo?two", extra=keep, version="1.0"))
    assert echoed(second)["query"] == "two"
    assert second.get("connection") == "keep-alive"


# --- HEAD ---


async def test_head_has_headers_and_no_body(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    await client.send(get("/bytes/1234").replace(b"GET", b"HEAD", 1))
    response = await client.response(head=True)
    assert response.status == 200
    assert response.get("content-length") == "1234"
    # The next bytes must be the next response, not a body of the HEAD one.
    after = await client.exchange(get("/"))
    assert after.status == 200 and after.body == b"hello from a\n"


# --- Expect: 100-continue ---


async def test_expect_100_continue(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
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
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address, http="{client_max_body_size: 1k}"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert response.status == 413  # the first response: no 100 Continue before it
    assert response.get("connection") == "close"
    await client.eof()


# --- chunked request bodies ---


async def test_chunked_request_body_reaches_upstream_with_a_length(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"6;quoted=\"a b\"\r\n world\r\n"
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


async def test_large_chunked_body_spooled_to_disk(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address, http="{client_body_buffer_size: 1k}"))
    body = pattern(200_000)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7000]), body[i : i + 7000])
        for i in range(0, len(body), 7000)
    )
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    data = echoed(response)
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == sha256(body)
    assert data["headers"]["content-length"] == str(len(body))


# --- header rules ---


async def test_forwarding_headers(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get(
            "/echo",
            headers={
                "Host": "shop.example:8080",
                "X-Forwarded-For": "203.0.113.7",
                "X-Real-IP": "198.51.100.1",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
            },
        )
    headers = response.json()["headers"]
    assert headers["host"] == "shop.example:8080"
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "shop.example:8080"


async def test_hop_by_hop_and_underscore_request_headers_removed(start_proxy, recorder):
    proxy = await start_proxy(proxy_yaml(recorder.address, upstream_extra=", keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"GET /x HTTP/1.1\r\nHost: t\r\n"
        b"Connection: keep-alive, X-Named-Hop\r\nX-Named-Hop: secret\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n"
        b"Proxy-Connection: keep-alive\r\nX_Under: 1\r\nX-End-To-End: kept\r\n\r\n"
    )
    assert response.status == 200 and response.body == b"ok"
    (sent,) = recorder.requests
    lines = sent.decode("latin-1").lower().split("\r\n")
    names = {line.split(":", 1)[0] for line in lines[1:] if line}
    assert "x-end-to-end" in names
    for hop in ("x-named-hop", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"):
        assert hop not in names, sent
    assert "x_under" not in names
    assert "x-named-hop" not in sent.decode("latin-1").lower()
    assert not any(line.startswith("connection:") and "keep-alive" in line for line in lines)


HOP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop-Resp\r\nX-Hop-Resp: 1\r\n"
    b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n"
    b"Upgrade: foo\r\nX-End: kept\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
)


async def test_hop_by_hop_response_headers_removed(start_proxy, recorder):
    recorder.response = HOP_RESPONSE
    proxy = await start_proxy(proxy_yaml(recorder.address, upstream_extra=", keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/"))
    assert response.status == 200
    assert response.body == b"hello world"
    assert response.get("x-end") == "kept"
    for hop in ("x-hop-resp", "keep-alive", "proxy-connection", "trailer", "upgrade", "x-t"):
        assert response.get(hop) is None, response.headers
    # The upstream's "Connection: close" is its hop; the client connection stays open.
    assert response.get("connection") is None
    assert (await client.exchange(get("/"))).body == b"hello world"


@pytest.mark.parametrize("size", [5, 200_000])
async def test_close_delimited_upstream_response_reframed(start_proxy, recorder, size):
    body = pattern(size)
    recorder.response = b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n" + body
    proxy = await start_proxy(proxy_yaml(recorder.address, upstream_extra=", keepalive: 0"))
    client = await Client.connect(proxy.port)
    for _ in range(2):  # the client connection survives the upstream's close
        response = await client.exchange(get("/"))
        assert response.status == 200
        assert response.framing in ("length", "chunked")
        assert response.body == body
        assert response.get("connection") is None


async def test_upstream_chunked_response_reframed(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml(gunicorn_a.address))
    client = await Client.connect(proxy.port)
    for size in (10, 300_000):
        response = await client.exchange(get(f"/stream/{size}"))
        assert response.status == 200
        assert response.framing in ("length", "chunked")
        assert response.body == pattern(size)


# --- routing ---

ROUTES = """
temp_path: "{{temp}}"
access_log: {{format: off}}
upstreams:
  app: {{servers: ["{address}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - path: /pre/
        return: {{status: 200, body: "prefix short"}}
      - regex: "\\\\.txt$"
        return: {{status: 200, body: "regex"}}
      - exact: /pre/file.txt
        return: {{status: 200, body: "exact"}}
      - path: /pre/longer/
        return: {{status: 200, body: "prefix long"}}
      - path: /app/
        proxy_pass: app
      - exact: /moved
        return: {{status: 301, location: "http://example.test/new"}}
      - exact: /gone
        return: {{status: 410}}
"""


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/pre/file.txt", 200, b"exact"),  # exact beats regex and prefixes
        ("/pre/file.txt?q=1", 200, b"exact"),  # the query is not part of the match
        ("/pre/other.txt", 200, b"regex"),  # regex beats the prefixes
        ("/pre/longer/other.txt", 200, b"regex"),
        ("/pre/longer/a", 200, b"prefix long"),  # the longest prefix wins
        ("/pre/%6conger/a", 200, b"prefix long"),  # matched on the decoded path
        ("/pre/x/../longer/a", 200, b"prefix long"),  # and with dot segments resolved
        ("/pre/a", 200, b"prefix short"),
        ("/app/anything", 200, b"hello from a\n"),  # proxied
        ("/nowhere", 404, None),
        ("/pre", 404, None),  # the prefix is /pre/
    ],
)
async def test_location_precedence(start_proxy, gunicorn_a: Gunicorn, target, status, body):
    proxy = await start_proxy(ROUTES.format(address=gunicorn_a.address))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get(target))
    assert response.status == status
    if body is not None:
        assert response.body == body
    else:
        assert b"404 Not Found" in response.body
    # Handlers that answer without an upstream keep the connection too.
    assert (await client.exchange(get("/pre/a"))).body == b"prefix short"


async def test_return_redirect_and_error_page(start_proxy, gunicorn_a):
    proxy = await start_proxy(ROUTES.format(address=gunicorn_a.address))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        moved = await client.get("/moved")
        assert moved.status_code == 301
        assert moved.headers["location"] == "http://example.test/new"
        gone = await client.get("/gone")
        assert gone.status_code == 410
        assert gone.headers["content-type"] == "text/html"
        assert b"410 Gone" in gone.content
        head = await client.head("/pre/a")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(b"prefix short"))

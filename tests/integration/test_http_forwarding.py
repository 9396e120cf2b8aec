"""What the upstream receives and what the client gets back: forwarding headers, hop-by-hop
removal both ways, re-framing of upstream responses, and location routing.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gunicorn
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client, echoed, get, pattern

# --- header rules ---


async def test_forwarding_headers(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
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


async def test_forwarding_headers_are_set_once(start_proxy, recorder):
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"GET /x HTTP/1.1\r\nHost: t.example\r\nX-Forwarded-For: 192.0.2.1\r\n"
        b"X-Forwarded-For: 192.0.2.2, 192.0.2.3\r\nX-Real-IP: 192.0.2.9\r\n"
        b"X-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    assert response.status == 200
    (sent,) = recorder.requests
    fields = [line.split(": ", 1) for line in sent.decode().split("\r\n")[1:] if line]
    by_name: dict[str, list[str]] = {}
    for name, value in fields:
        by_name.setdefault(name.lower(), []).append(value)
    assert by_name["x-forwarded-for"] == ["192.0.2.1, 192.0.2.2, 192.0.2.3, 127.0.0.1"]
    assert by_name["x-real-ip"] == ["127.0.0.1"]
    assert by_name["x-forwarded-host"] == ["t.example"]
    assert by_name["x-forwarded-proto"] == ["http"]
    assert by_name["host"] == ["t.example"]


async def test_absolute_form_target_is_forwarded_in_origin_form(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"GET http://other.example:81/echo?x=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n"
    )
    data = echoed(response)
    assert (data["path"], data["query"]) == ("/echo", "x=1")
    assert data["headers"]["host"] == "other.example:81"


async def test_hop_by_hop_and_underscore_request_headers_removed(start_proxy, recorder):
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
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


async def test_request_field_names_go_upstream_as_the_client_spelled_them(start_proxy, recorder):
    # As nginx passes them on. The fields the proxy writes itself keep their own spelling;
    # a field that Connection names still goes, spelled as sent; X_Under is still dropped.
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"POST /x HTTP/1.1\r\nHost: t\r\nX-Custom-Thing: 1\r\nuser-AGENT: Probe/1\r\n"
        b"X_Under: 1\r\nACCEPT: */*\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert response.status == 200
    (sent,) = recorder.requests
    names = [line.split(":", 1)[0] for line in sent.decode("latin-1").split("\r\n")[1:] if line]
    assert [n for n in names if n.lower() in ("x-custom-thing", "user-agent", "accept")] == [
        "X-Custom-Thing",
        "user-AGENT",
        "ACCEPT",
    ]
    assert "X_Under" not in names and "x_under" not in names
    client = await Client.connect(proxy.port)
    response = await client.exchange(
        b"GET /y HTTP/1.1\r\nHost: t\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Kept-AS-Sent: 2\r\n\r\n"
    )
    assert response.status == 200
    sent = recorder.requests[-1].decode("latin-1")
    assert "\r\nX-Kept-AS-Sent: 2\r\n" in sent and "X-Hop" not in sent


HOP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop-Resp\r\nX-Hop-Resp: 1\r\n"
    b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n"
    b"Upgrade: foo\r\nX-End: kept\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
)


async def test_hop_by_hop_response_headers_removed(start_proxy, recorder):
    recorder.response = HOP_RESPONSE
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
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


async def test_response_fields_kept_as_sent_and_ours_set_once(start_proxy, recorder):
    recorder.response = (
        b"HTTP/1.1 201 Made It\r\nServer: upstream/1.0\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
        b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )  # both framings: Transfer-Encoding wins (RFC 9112 6.3)
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/"))
    assert (response.status, response.reason, response.body) == (201, "Made It", b"abc")
    assert response.all("set-cookie") == ["a=1; Path=/", "b=2"]
    assert response.all("server") == ["edgeproxy"]
    assert len(response.all("date")) == 1
    assert response.get("date") != "Mon, 01 Jan 2001 00:00:00 GMT"
    assert len(response.all("content-length")) + len(response.all("transfer-encoding")) == 1


@pytest.mark.parametrize("size", [5, 200_000])
async def test_close_delimited_upstream_response_reframed(start_proxy, recorder, size):
    body = pattern(size)
    recorder.response = b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n" + body
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    for _ in range(2):  # the client connection survives the upstream's close
        response = await client.exchange(get("/"))
        assert response.status == 200
        assert response.framing in ("length", "chunked")
        assert response.body == body
        assert response.get("connection") is None


async def test_upstream_chunked_response_reframed(start_proxy, gunicorn_a):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    for size in (10, 300_000):
        response = await client.exchange(get(f"/stream/{size}"))
        assert response.status == 200
        assert response.framing in ("length", "chunked")
        assert response.body == pattern(size)


async def test_upstream_informational_response_is_not_relayed(start_proxy, recorder):
    recorder.response = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    )
    proxy = await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get("/"))
    assert (response.status, response.body) == (200, b"final")
    assert (await client.exchange(get("/"))).body == b"final"


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_upstream_status_keeps_the_client_in_step(start_proxy, gunicorn_a, status):
    proxy = await start_proxy(proxy_yaml([gunicorn_a.address]))
    client = await Client.connect(proxy.port)
    response = await client.exchange(get(f"/status/{status}"))
    assert response.status == status
    assert response.get("transfer-encoding") is None
    # Whatever the app wrote after a 204/304 head is not a body: the next bytes on the
    # client connection are the next response.
    assert (await client.exchange(get("/"))).body == b"hello from a\n"


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


async def test_request_body_to_a_return_location_is_consumed(start_proxy, gunicorn_a):
    proxy = await start_proxy(ROUTES.format(address=gunicorn_a.address))
    client = await Client.connect(proxy.port)
    for target in ("/pre/a", "/nowhere"):
        response = await client.exchange(
            b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" % target.encode()
        )
        assert response.status in (200, 404)
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

"""What the two codecs used to answer differently, through real sockets, once per codec
(tests/conftest.py's http_parser): the client always gets a status for a request it sent
in full, and a request either codec forwards, the other forwards the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Proxy
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client, RecordingUpstream, get


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingUpstream]:
    upstream = await RecordingUpstream().start()
    yield upstream
    upstream.close()


@pytest.fixture
async def proxy(start_proxy, recorder: RecordingUpstream) -> Proxy:
    return await start_proxy(proxy_yaml([recorder.address], upstream="keepalive: 0"))


async def answered(proxy: Proxy, request: bytes) -> int:
    """The status `request` gets; a refusal also closes the connection."""
    client = await Client.connect(proxy.port)
    response = await client.exchange(request)
    if response.status >= 400:
        assert response.get("connection") == "close"
        await client.eof()
    else:
        client.close()
    return response.status


REFUSED = {
    "content-length-list": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        400,
    ),
    "several-spaces": (b"GET   /1 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "no-space-before-version": (b"HEAD /2HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "stray-cr-before": (b"\rGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "fragment": (b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "http-9.1": (b"GET / HTTP/9.1\r\nHost: t\r\n\r\n", 505),
    "http-1.32": (b"GET / HTTP/1.32\r\nHost: t\r\n\r\n", 400),
    "te-identity": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    "expect-twice": (
        b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n"
        b"Content-Length: 1\r\n\r\nx",
        417,
    ),
}


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_with_one_status_on_every_codec(proxy, recorder, request_bytes, status):
    assert await answered(proxy, request_bytes) == status
    assert recorder.connections == 0, recorder.requests


@pytest.mark.parametrize("method", ["BREW", "X-CUSTOM", "PURGE"])
async def test_extension_methods_are_forwarded(proxy, recorder, method):
    request = f"{method} /m HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi".encode()
    assert await answered(proxy, request) == 200
    assert recorder.requests[0].startswith(f"{method} /m HTTP/1.1\r\n".encode())
    assert recorder.requests[0].endswith(b"\r\n\r\nhi")


async def test_a_higher_minor_version_is_served_as_http11(proxy, recorder):
    client = await Client.connect(proxy.port)
    response = await client.exchange(b"GET /v HTTP/1.8\r\nHost: t\r\n\r\n")
    assert (response.status, response.version) == (200, "HTTP/1.1")
    assert response.get("connection") is None  # kept alive, as HTTP/1.1 is
    assert (await client.exchange(get("/next"))).status == 200
    client.close()
    assert recorder.requests[0].startswith(b"GET /v HTTP/1.1\r\n")

"""X-Accel-Redirect from a real gunicorn app: the app decides, edgeproxy sends the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gunicorn
from tests.integration.raw_http import Client

PRIVATE = b"private report, for paying users only\n" * 100

CONFIG = """
upstreams:
  app: {{servers: ["{upstream}"]}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /protected/, alias: "{private}/", internal: true}}
      - {{path: /public/, alias: "{private}/"}}
      - {{path: /, proxy_pass: app}}
"""


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], tmp_path: Path, gunicorn_a: Gunicorn) -> Any:
    private = tmp_path / "private"
    private.mkdir()
    (private / "report.txt").write_bytes(PRIVATE)
    return await start_proxy(CONFIG.format(private=private, upstream=gunicorn_a.address))


async def fetch(proxy: Any, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        return await client.get(path, headers=headers)


async def test_the_app_names_the_file_and_the_proxy_sends_it(proxy: Any) -> None:
    response = await fetch(proxy, "/accel/report.txt")
    assert response.status_code == 200
    assert response.content == PRIVATE
    assert response.headers["content-type"] == "text/plain"
    assert "x-accel-redirect" not in response.headers
    assert response.headers["accept-ranges"] == "bytes"


async def test_a_streamed_app_body_is_dropped(proxy: Any) -> None:
    response = await fetch(proxy, "/accel/report.txt?big=1")
    assert response.content == PRIVATE
    assert (await fetch(proxy, "/echo")).status_code == 200  # the pool still works


async def test_ranges_and_validators_apply_to_the_file(proxy: Any) -> None:
    part = await fetch(proxy, "/accel/report.txt", range="bytes=0-6")
    assert part.status_code == 206
    assert part.content == PRIVATE[:7]
    etag = (await fetch(proxy, "/accel/report.txt")).headers["etag"]
    cached = await fetch(proxy, "/accel/report.txt", **{"if-none-match": etag})
    assert cached.status_code == 304


async def test_internal_locations_are_404_when_asked_directly(proxy: Any) -> None:
    direct = await fetch(proxy, "/protected/report.txt")
    assert direct.status_code == 404
    assert PRIVATE not in direct.content
    assert (await fetch(proxy, "/public/report.txt")).content == PRIVATE


async def test_a_redirect_to_a_missing_file_or_no_internal_location_is_404(proxy: Any) -> None:
    assert (await fetch(proxy, "/accel/nope.txt")).status_code == 404
    # The app names /protected/x/y/z/../../../../report.txt, which is /report.txt: no
    # internal location serves it.
    escape = await fetch(proxy, "/accel/x/y/z/..%2f..%2f..%2f..%2freport.txt")
    assert escape.status_code == 404
    assert PRIVATE not in escape.content
    assert "x-accel-redirect" not in escape.headers


async def test_keep_alive_after_redirects(proxy: Any) -> None:
    client = await Client.connect(proxy.port)
    try:
        for _ in range(3):
            request = b"GET /accel/report.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            response = await client.exchange(request)
            assert response.status == 200
            assert response.body == PRIVATE
            assert response.get("x-accel-redirect") is None
        head = await client.exchange(
            b"HEAD /accel/report.txt HTTP/1.1\r\nHost: x\r\n\r\n", head=True
        )
        assert head.status == 200
        assert head.get("content-length") == str(len(PRIVATE))
    finally:
        client.close()

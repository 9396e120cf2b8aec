"""Precompressed siblings (gzip_static, on by default) through real sockets."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.raw_http import Client

TEXT = b"function hello() { return 'hello'; }\n" * 50
BROTLI = b"(brotli bytes, not checked by the proxy)"

CONFIG = """
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /, root: "{root}"}}
      - {{path: /plain/, alias: "{root}/", gzip_static: false}}
"""


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], tmp_path: Path) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    (root / "app.js").write_bytes(TEXT)
    (root / "app.js.gz").write_bytes(gzip.compress(TEXT))
    (root / "app.js.br").write_bytes(BROTLI)
    (root / "only-gz.css").write_bytes(TEXT)
    (root / "only-gz.css.gz").write_bytes(gzip.compress(TEXT))
    (root / "alone.txt").write_bytes(TEXT)
    return await start_proxy(CONFIG.format(root=root))


async def raw(proxy: Any, path: str, accept: str | None, method: str = "GET") -> Any:
    field = f"Accept-Encoding: {accept}\r\n" if accept is not None else ""
    client = await Client.connect(proxy.port)
    try:
        await client.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{field}\r\n".encode())
        return await client.response(head=method == "HEAD")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.8", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("*", "br"),
        ("*, br;q=0", "gzip"),
        ("identity", None),
        ("", None),
        (None, None),
    ],
)
async def test_sibling_per_accept_encoding(
    proxy: Any, accept: str | None, encoding: str | None
) -> None:
    response = await raw(proxy, "/app.js", accept)
    assert response.status == 200
    assert response.get("vary") == "Accept-Encoding"  # on every response of this file
    assert response.get("content-type") == "application/javascript"
    assert response.get("content-encoding") == encoding
    expected = {None: TEXT, "gzip": gzip.compress(TEXT), "br": BROTLI}[encoding]
    if encoding == "gzip":
        assert gzip.decompress(response.body) == TEXT
    else:
        assert response.body == expected
    assert response.get("content-length") == str(len(response.body))


async def test_only_a_gz_sibling(proxy: Any) -> None:
    response = await raw(proxy, "/only-gz.css", "br, gzip")
    assert response.get("content-encoding") == "gzip"
    assert gzip.decompress(response.body) == TEXT
    other = await raw(proxy, "/only-gz.css", "br")
    assert other.get("content-encoding") is None
    assert other.get("vary") == "Accept-Encoding"


async def test_no_sibling_no_vary(proxy: Any) -> None:
    response = await raw(proxy, "/alone.txt", "gzip, br")
    assert response.status == 200
    assert response.get("vary") is None
    assert response.get("content-encoding") is None


async def test_gzip_static_off(proxy: Any) -> None:
    response = await raw(proxy, "/plain/app.js", "gzip, br")
    assert response.get("content-encoding") is None
    assert response.get("vary") is None
    assert response.body == TEXT


async def test_variants_have_their_own_validators(proxy: Any) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        plain = await client.get("/app.js", headers={"accept-encoding": "identity"})
        zipped = await client.get("/app.js", headers={"accept-encoding": "gzip"})
        assert plain.headers["etag"] != zipped.headers["etag"]
        again = await client.get(
            "/app.js", headers={"accept-encoding": "gzip", "if-none-match": zipped.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.headers["vary"] == "Accept-Encoding"


async def test_head_of_a_sibling(proxy: Any) -> None:
    response = await raw(proxy, "/app.js", "gzip", method="HEAD")
    assert response.get("content-encoding") == "gzip"
    assert response.get("content-length") == str(len(gzip.compress(TEXT)))

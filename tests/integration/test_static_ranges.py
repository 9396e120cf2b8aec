"""Range requests on static files: single, multiple, If-Range, unsatisfiable."""

from __future__ import annotations

from collections.abc import Callable
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.raw_http import Client

DATA = bytes(range(256)) * 40  # 10240 bytes, every byte value

CONFIG = """
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /, root: "{root}"}}
"""


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], tmp_path: Path) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(DATA)
    return await start_proxy(CONFIG.format(root=root))


async def fetch(proxy: Any, method: str = "GET", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        return await client.request(method, "/data.bin", headers=headers)


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("0-99", 0, 99),
        ("10000-", 10000, 10239),
        ("-40", 10200, 10239),
        ("10230-99999", 10230, 10239),
    ],
)
async def test_single_range(proxy: Any, spec: str, first: int, last: int) -> None:
    response = await fetch(proxy, range=f"bytes={spec}")
    assert response.status_code == 206
    assert response.content == DATA[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["content-type"] == "application/octet-stream"


async def test_multiple_ranges_are_multipart(proxy: Any) -> None:
    response = await fetch(proxy, range="bytes=0-9, 100-199, -5")
    assert response.status_code == 206
    kind = response.headers["content-type"]
    assert kind.startswith("multipart/byteranges; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    message = BytesParser().parsebytes(
        b"content-type: " + kind.encode() + b"\r\n\r\n" + response.content
    )
    parts = message.get_payload()
    assert isinstance(parts, list)
    expected = [(0, 9), (100, 199), (10235, 10239)]
    assert len(parts) == len(expected)
    for part, (first, last) in zip(parts, expected, strict=True):
        assert part["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
        assert part["content-type"] == "application/octet-stream"
        assert part.get_payload(decode=True) == DATA[first : last + 1]


async def test_unsatisfiable_range_is_416(proxy: Any) -> None:
    response = await fetch(proxy, range="bytes=20000-")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"


async def test_a_malformed_range_is_ignored(proxy: Any) -> None:
    response = await fetch(proxy, range="bytes=9-1")
    assert response.status_code == 200
    assert response.content == DATA


async def test_if_range(proxy: Any) -> None:
    full = await fetch(proxy)
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert full.headers["accept-ranges"] == "bytes"
    same = await fetch(proxy, range="bytes=0-1", **{"if-range": etag})
    assert same.status_code == 206
    assert same.content == DATA[:2]
    by_date = await fetch(proxy, range="bytes=0-1", **{"if-range": modified})
    assert by_date.status_code == 206
    changed = await fetch(proxy, range="bytes=0-1", **{"if-range": '"older"'})
    assert changed.status_code == 200
    assert changed.content == DATA


async def test_head_with_range_answers_the_whole_file(proxy: Any) -> None:
    client = await Client.connect(proxy.port)
    try:
        await client.send(b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n")
        response = await client.response(head=True)
    finally:
        client.close()
    assert response.status == 200
    assert response.get("content-length") == str(len(DATA))

"""The open-file cache through real sockets: never stale past its bound, never a wrong
length, and bounded in open files."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeproxy.http.status import error_page
from edgeproxy.server.static import cache
from tests.integration.raw_http import Client, get

CONFIG = """
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /, root: "{root}"}}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "hot.txt").write_bytes(b"version 1\n")
    return root


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], root: Path) -> Any:
    return await start_proxy(CONFIG.format(root=root))


async def body_of(client: Client, path: str) -> tuple[int, bytes]:
    response = await client.exchange(get(path))
    assert response.get("content-length") == str(len(response.body))
    return response.status, response.body


async def until_served(client: Client, path: str, expected: tuple[int, bytes]) -> float:
    """Seconds until `path` answers `expected` (every answer on the way checked for length)."""
    started = time.monotonic()
    deadline = started + cache.VALID + 5.0
    while time.monotonic() < deadline:
        if await body_of(client, path) == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {expected}")


async def test_an_edit_in_place_is_seen_at_once(proxy: Any, root: Path) -> None:
    client = await Client.connect(proxy.port)
    try:
        assert await body_of(client, "/hot.txt") == (200, b"version 1\n")
        with open(root / "hot.txt", "r+b") as f:  # the same inode, a new size
            f.write(b"version 2, longer\n")
        assert await body_of(client, "/hot.txt") == (200, b"version 2, longer\n")
    finally:
        client.close()


async def test_a_replaced_file_is_seen_within_the_bound(proxy: Any, root: Path) -> None:
    client = await Client.connect(proxy.port)
    try:
        assert await body_of(client, "/hot.txt") == (200, b"version 1\n")
        new = root / "hot.txt.new"
        new.write_bytes(b"version 3 via rename\n")
        os.rename(new, root / "hot.txt")  # a new inode: the cached fd still holds the old
        await until_served(client, "/hot.txt", (200, b"version 3 via rename\n"))
        (root / "hot.txt").unlink()
        await until_served(client, "/hot.txt", (404, error_page(404)))
    finally:
        client.close()


async def test_open_files_stay_bounded(proxy: Any, root: Path) -> None:
    count = 3 * cache.MAX_ENTRIES + 20
    for i in range(count):
        (root / f"f{i}.txt").write_bytes(b"%d" % i)
        (root / f"f{i}.txt.gz").write_bytes(b"gz")
    before = len(os.listdir("/proc/self/fd"))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10.0) as client:
        for i in range(count):
            response = await client.get(f"/f{i}.txt", headers={"accept-encoding": "identity"})
            assert response.content == b"%d" % i
    grown = len(os.listdir("/proc/self/fd")) - before
    assert grown <= 2 * cache.MAX_ENTRIES + 10  # a file and its .gz per kept path

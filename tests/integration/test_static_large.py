"""Large files: a 256 MiB file reaches a slow reader intact while the proxy's memory stays
far below the file's size, and a reader that stops is dropped after send_timeout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.raw_http import Client

BLOCK = hashlib.sha256(b"block").digest() * 2048  # 64 KiB of varied bytes
SIZE = 256 * 1024 * 1024

CONFIG = """
http: {{send_timeout: 1s}}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - {{path: /, root: "{root}"}}
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("big")
    digest = hashlib.sha256()
    with open(root / "big.bin", "wb") as f:
        for _ in range(SIZE // len(BLOCK)):
            f.write(BLOCK)
            digest.update(BLOCK)
    return root, digest.hexdigest()


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], big_root: tuple[Path, str]) -> Any:
    return await start_proxy(CONFIG.format(root=big_root[0]))


async def small_window_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=64 * 1024)


async def test_256_mib_to_a_slow_reader_with_bounded_memory(
    proxy: Any, big_root: tuple[Path, str]
) -> None:
    reader, writer = await small_window_client(proxy.port)
    try:
        writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: %d\r\n" % SIZE in head.lower()
        before = rss_bytes()
        peak = before
        digest = hashlib.sha256()
        received = 0
        reads = 0
        while received < SIZE:
            piece = await asyncio.wait_for(reader.read(64 * 1024), 10)
            assert piece, f"connection closed after {received} bytes"
            digest.update(piece)
            received += len(piece)
            reads += 1
            if reads % 64 == 0:  # a slow reader: pauses that let the proxy's writes back up
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.002)
        assert received == SIZE
        assert digest.hexdigest() == big_root[1]
        # The proxy sends from the page cache: it holds at most a piece or two per
        # connection, never the file (nor a large share of it).
        assert peak - before < 32 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"
        # The connection is still good for another request.
        writer.write(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        again = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert again.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_a_reader_that_stops_is_dropped_after_send_timeout(proxy: Any) -> None:
    reader, writer = await small_window_client(proxy.port)
    client = Client(reader, writer)
    try:
        writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(writer.drain(), 5)
        # Read nothing until the proxy has given up (send_timeout 1s), then the rest of
        # what was in flight arrives and the connection ends well short of the file.
        await asyncio.wait_for(_until_server_gone(proxy), 15)
        data = await client.eof(timeout=10)
        assert len(data) < SIZE // 2
    finally:
        client.close()


async def _until_server_gone(proxy: Any) -> None:
    """The worker holds no client connection any more."""
    connections = proxy.worker.services.connections
    while connections:
        await asyncio.sleep(0.05)


async def test_a_file_truncated_while_sent_drops_the_connection(
    proxy: Any, big_root: tuple[Path, str]
) -> None:
    """Never a wrong length: fewer bytes than announced arrive, then the connection ends."""
    path = big_root[0] / "shrinking.bin"
    size = 32 * 1024 * 1024
    with open(path, "wb") as f:
        for _ in range(size // len(BLOCK)):
            f.write(BLOCK)
    reader, writer = await small_window_client(proxy.port)
    try:
        writer.write(b"GET /shrinking.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"content-length: %d\r\n" % size in head.lower()
        first = await asyncio.wait_for(reader.readexactly(1024 * 1024), 10)
        os.truncate(path, 2 * 1024 * 1024)
        received = len(first)
        for _ in range(10_000):  # bounded: the connection must end well before the size
            try:
                piece = await asyncio.wait_for(reader.read(256 * 1024), 10)
            except ConnectionResetError:
                break
            if not piece:
                break
            received += len(piece)
        assert received < size
    finally:
        writer.close()
        path.unlink()

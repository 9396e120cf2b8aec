"""Helpers for the proxying tests: tiny raw upstreams, proxy configs, temp-file and hash checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

Handler = Callable[["RawUpstream", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

BLOCK = bytes(range(256)) * 256  # tests/apps/wsgi_app.py's _pattern block (64 KiB)


def pattern_sha256(size: int) -> str:
    """The sha256 of the app's /bytes/N and /stream/N body of `size` bytes."""
    digest = hashlib.sha256()
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


def temp_fds(temp_path: Path) -> list[str]:
    """Targets of this process's open fds that point into `temp_path` (the worker is in-process).

    Temp files are anonymous (O_TMPFILE or unlinked), so they only show up as fd links such as
    "/tmp/.../spool0/#1234 (deleted)".
    """
    prefix = str(temp_path) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listdir fd itself, for one)
        if target.startswith(prefix):
            found.append(target)
    return found


def temp_file_sizes(temp_path: Path) -> list[int]:
    """Sizes of the temp files under `temp_path` that this process has open."""
    sizes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(temp_path) + os.sep):
                sizes.append(os.stat(f"/proc/self/fd/{fd}").st_size)
        except OSError:
            continue
    return sizes


def proxy_yaml(peers: list[str], *, upstream: str = "", http: str = "") -> str:
    """A config whose one server proxies every path to upstream `app`.

    `peers` are YAML values: an address, or a mapping such as `{address: "...", weight: 3}`.
    `upstream` and `http` are extra lines for those sections, indented for you. The body
    limit is raised to 64m (tests upload more than nginx's 1m default) unless `http` sets it.
    """
    if "client_max_body_size:" not in http:
        http = f"client_max_body_size: 64m\n{http}"
    peer_lines = "\n".join(f"      - {peer}" for peer in peers)
    upstream_lines = "".join(f"    {line}\n" for line in upstream.strip().splitlines())
    http_lines = "".join(f"  {line}\n" for line in http.strip().splitlines())
    return f"""
temp_path: "{{temp}}"
access_log: {{format: off}}
http:
{http_lines}upstreams:
  app:
{upstream_lines}    servers:
{peer_lines}
servers:
  - listen: ["127.0.0.1:0"]
    locations:
      - path: /
        proxy_pass: app
"""


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request head (its body, by Content-Length, is read and dropped); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value):
            await reader.readexactly(int(value))
    return head


def response(status: int = 200, body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


async def keep_alive_ok(
    up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer every request on the connection with 200 "ok", keeping it open."""
    while await read_request(reader) is not None:
        up.requests += 1
        writer.write(response())
        await writer.drain()


class RawUpstream:
    """A tiny asyncio server on 127.0.0.1:0 running `handler` per connection, counting them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # cancelled by __aexit__; asyncio.start_server logs a cancelled handler
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()

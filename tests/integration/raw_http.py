"""Raw-socket helpers for the protocol tests: a strict response reader and a recording peer.

Every read is bounded by asyncio.wait_for, so a server that stops answering fails the test
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.integration.fake_upstreams import BLOCK

T = TypeVar("T")

TIMEOUT = 5.0  # seconds any single read may take before the test fails


def pattern(size: int) -> bytes:
    """The body of `size` bytes that the app's /stream/N and /bytes/N produce."""
    return (BLOCK * (size // len(BLOCK) + 1))[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RawResponse:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]  # names lowercased, in the order received
    body: bytes = b""
    framing: str = "none"  # none | length | chunked | close

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


async def _within(awaitable: Awaitable[T], timeout: float) -> T:
    return await asyncio.wait_for(awaitable, timeout)


def echoed(response: RawResponse) -> dict[str, Any]:
    """The JSON of a 200 answer from the test app's /echo."""
    assert response.status == 200, response
    result: dict[str, Any] = json.loads(response.body)
    return result


async def read_response(
    reader: asyncio.StreamReader, *, head: bool = False, timeout: float = TIMEOUT
) -> RawResponse:
    """One response: status line, fields, and the body framed as the fields say."""
    raw = await _within(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name and name == name.strip(), f"bad response field line {line!r}"
        headers.append((name.lower(), value.strip()))
    response = RawResponse(int(status), reason[0] if reason else "", version, headers)
    code = response.status
    if head or code < 200 or code in (204, 304):
        return response
    coding = response.get("transfer-encoding")
    length = response.get("content-length")
    if coding is not None:
        assert coding.lower() == "chunked", f"unexpected transfer-encoding {coding!r}"
        assert length is None, "both content-length and transfer-encoding in a response"
        response.framing = "chunked"
        response.body = await _read_chunked(reader, timeout)
    elif length is not None:
        response.framing = "length"
        response.body = await _within(reader.readexactly(int(length)), timeout)
    else:
        response.framing = "close"
        response.body = await _within(reader.read(), timeout)
    return response


async def _read_chunked(reader: asyncio.StreamReader, timeout: float) -> bytes:
    body = bytearray()
    for _ in range(100_000):  # bounded: a runaway stream fails the test
        size_line = await _within(reader.readuntil(b"\r\n"), timeout)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            for _ in range(100):
                if await _within(reader.readuntil(b"\r\n"), timeout) == b"\r\n":
                    return bytes(body)
            raise AssertionError("endless trailer section")
        body += await _within(reader.readexactly(size + 2), timeout)
        assert body[-2:] == b"\r\n", "chunk data not followed by CRLF"
        del body[-2:]
    raise AssertionError("too many chunks")


async def expect_eof(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """Wait until the server closes; returns whatever bytes arrived first (a reset is EOF)."""
    data = bytearray()
    try:
        for _ in range(10_000):
            piece = await _within(reader.read(65536), timeout)
            if not piece:
                break
            data += piece
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"server did not close the connection (got {bytes(data)!r})") from None
    return bytes(data)


class Client:
    """One raw client connection to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await _within(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await _within(self.writer.drain(), TIMEOUT)

    async def response(self, *, head: bool = False, timeout: float = TIMEOUT) -> RawResponse:
        return await read_response(self.reader, head=head, timeout=timeout)

    async def exchange(self, data: bytes, *, head: bool = False) -> RawResponse:
        await self.send(data)
        return await self.response(head=head)

    async def eof(self, timeout: float = TIMEOUT) -> bytes:
        return await expect_eof(self.reader, timeout)

    def close(self) -> None:
        self.writer.close()


def get(path: str, host: str = "test.local", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class RecordingUpstream:
    """A tiny HTTP peer that records each request (head + Content-Length body) it receives
    and answers every one with `response`, closing the connection afterwards."""

    response: bytes = OK
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    address: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> RecordingUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await _within(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await _within(reader.readexactly(length), TIMEOUT)
            self.requests.append(head + body)
            writer.write(self.response)
            await _within(writer.drain(), TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

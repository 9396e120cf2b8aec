"""How a response body goes on the wire, one writer per framing, chosen from WRITERS.

Whatever produces the body (memory, a spool, an upstream stream, a file region), it is
written through the writer its response head chose: the writer only frames what it is
given (`write`, which says how many body bytes went out), ends the body (`finish`), and
sends a region of an open file (`write_file`: straight from the page cache to the socket
with sendfile where the framing allows it). Writers hold no state: one of each serves
every response.
"""

from __future__ import annotations

import asyncio
import os
from typing import Final

FILE_PIECE = 64 * 1024  # bytes read from a file per piece when it cannot be sent by sendfile

# Framing kinds, as ResponseWriter.send_head decides them.
LENGTH: Final = 0  # Content-Length, or delimited by closing the connection (HTTP/1.0)
CHUNKED: Final = 1
NO_BODY: Final = 2  # HEAD, 1xx, 204, 304: the head only


class BodyWriter:
    """Content-Length framing (and close-delimited: the same bytes, the close ends them)."""

    __slots__ = ()

    def write(self, transport: asyncio.Transport, data: bytes | bytearray) -> int:
        transport.write(data)
        return len(data)

    def finish(self, transport: asyncio.Transport) -> None:
        pass

    def write_file(self, transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
        """Send up to `count` bytes of the file `fd` from `offset`; the number sent.

        With nothing queued on the transport the bytes go with sendfile, no copy through
        Python; what the socket does not take at once is read and queued (the caller waits
        for room before the next region, as for any other write).
        """
        sent = 0
        if transport.get_write_buffer_size() == 0:
            sent = _sendfile(transport, fd, offset, count)
        if sent < count:
            data = os.pread(fd, min(count - sent, FILE_PIECE), offset + sent)
            if not data:
                raise OSError("file shorter than its region")
            transport.write(data)
            sent += len(data)
        return sent


class ChunkedWriter(BodyWriter):
    __slots__ = ()

    def write(self, transport: asyncio.Transport, data: bytes | bytearray) -> int:
        transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        return len(data)

    def finish(self, transport: asyncio.Transport) -> None:
        transport.write(b"0\r\n\r\n")

    def write_file(self, transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
        data = os.pread(fd, min(count, FILE_PIECE), offset)
        if not data:
            raise OSError("file shorter than its region")
        return self.write(transport, data)


class NoBodyWriter(BodyWriter):
    """The response has no body (HEAD, 204, 304): whatever is offered is dropped."""

    __slots__ = ()

    def write(self, transport: asyncio.Transport, data: bytes | bytearray) -> int:
        return 0

    def write_file(self, transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
        return count  # taken (and dropped): the caller moves on as if it was sent


WRITERS: dict[int, BodyWriter] = {
    LENGTH: BodyWriter(),
    CHUNKED: ChunkedWriter(),
    NO_BODY: NoBodyWriter(),
}


def _sendfile(transport: asyncio.Transport, fd: int, offset: int, count: int) -> int:
    """sendfile on the transport's socket; 0 where that cannot be done (TLS, full socket)."""
    if transport.get_extra_info("sslcontext") is not None:
        return 0  # TLS encrypts in user space: the bytes must pass through it
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return os.sendfile(sock.fileno(), fd, offset, count)
    except (BlockingIOError, InterruptedError):
        return 0

"""Message bodies held in memory up to a limit, then in an anonymous temp file.

Temp files come from tempfile.TemporaryFile: on Linux they have no name at all (O_TMPFILE)
or are unlinked at once, so they disappear when closed and even when the process is killed.
Disk writes are blocking calls on the event loop, as in nginx: they land in the page cache.
They are unbuffered, so that a failure (a full disk) is raised by the write that met it,
while the request can still be answered, never later by a flush.

A temp file that cannot be created, written or read raises SpoolError: the fault is ours
(the operator's temp_path), not the client's or the upstream's.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO, Final

READ_CHUNK: Final = 64 * 1024
# Smaller pieces are copied together, so that a body sent a few bytes at a time costs its
# size in memory, not an object per piece.
SMALL_PIECE: Final = 4096


class SpoolError(Exception):
    """A temp file in `directory` could not be created, written or read; the message names
    the directory and the errno ("cannot write a temp file in /x: No space left on device
    (ENOSPC)")."""

    def __init__(self, action: str, directory: str, error: OSError) -> None:
        code = error.errno
        if code is None:
            why = str(error)
        else:
            why = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
        super().__init__(f"cannot {action} a temp file in {directory}: {why}")
        self.code = code  # the errno, or None


def _temp_file(directory: str, prefix: str) -> BinaryIO:
    """An anonymous unbuffered file; the owning body object closes it (it outlives any
    `with`)."""
    try:
        return tempfile.TemporaryFile(dir=directory, prefix=prefix, buffering=0)
    except OSError as exc:
        raise SpoolError("create", directory, exc) from None


def _write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    """Write all of `data` at `offset` (a write may take part of it: on a disk about to be
    full, the part that fits, and the next one fails with ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


class RequestBody:
    """A complete request body, re-readable from the start (a retry sends it again).

    In memory it is the list of pieces as they arrived, never joined: they go to the
    upstream in one gathered write, so a body is not copied on its way through.
    """

    __slots__ = ("_file", "_memory_limit", "_parts", "_temp_dir", "size")

    def __init__(self, memory_limit: int, temp_dir: str) -> None:
        self._parts: list[bytes | bytearray] = []
        self._memory_limit = memory_limit
        self._temp_dir = temp_dir
        self._file: BinaryIO | None = None
        self.size = 0

    @property
    def spooled(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        """Add `data`; SpoolError when a temp file cannot take it (the body is then
        unusable: refuse the request)."""
        offset = self.size
        self.size += len(data)
        if self._file is not None:
            self._write(data, offset)
        elif self.size > self._memory_limit:
            self._file = _temp_file(self._temp_dir, "edgeproxy-body-")
            offset = 0
            for part in self._parts:
                self._write(part, offset)
                offset += len(part)
            self._write(data, offset)
            self._parts = []
        elif len(data) >= SMALL_PIECE:
            self._parts.append(data)
        elif self._parts and type(self._parts[-1]) is bytearray:
            self._parts[-1] += data
        else:
            self._parts.append(bytearray(data))

    def _write(self, data: bytes | bytearray, offset: int) -> None:
        assert self._file is not None
        try:
            _write_all(self._file.fileno(), data, offset)
        except OSError as exc:
            raise SpoolError("write", self._temp_dir, exc) from None

    def in_memory(self) -> list[bytes | bytearray] | None:
        """The body's pieces when it is in memory (the fast path; do not modify), else None."""
        return None if self._file is not None else self._parts

    def chunks(self) -> Iterator[bytes | bytearray]:
        if self._file is None:
            yield from self._parts
            return
        fd = self._file.fileno()
        offset = 0
        while offset < self.size:
            try:
                chunk = os.pread(fd, READ_CHUNK, offset)
            except OSError as exc:
                raise SpoolError("read", self._temp_dir, exc) from None
            if not chunk:
                short = OSError(errno.EIO, "temp file shorter than the body written to it")
                raise SpoolError("read", self._temp_dir, short)
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._parts:
            self._parts = []


class ResponseSpool:
    """Response bytes the client has not taken yet, in arrival order.

    The proxy writes straight to the client while it keeps up; only what the client is
    not ready for lands here: memory up to `memory_limit`, then a temp file holding up to
    `file_limit` bytes (0 = never spool: the unbuffered, flow-controlled mode). While
    `full`, the upstream is not read. `put` and `pop` raise SpoolError when the temp file
    fails them.
    """

    __slots__ = (
        "_chunks",
        "_file",
        "_file_limit",
        "_file_read",
        "_file_write",
        "_memory",
        "_memory_limit",
        "_temp_dir",
    )

    def __init__(self, memory_limit: int, file_limit: int, temp_dir: str) -> None:
        self._chunks: deque[bytes] = deque()
        self._memory = 0
        self._memory_limit = memory_limit
        self._file_limit = file_limit
        self._temp_dir = temp_dir
        self._file: BinaryIO | None = None
        self._file_read = 0
        self._file_write = 0

    @property
    def pending(self) -> bool:
        return bool(self._chunks) or self._file_write > self._file_read

    @property
    def full(self) -> bool:
        # Once spooling, every put goes to the file (memory only drains), so the file alone
        # decides: its size, which only shrinks when drained, caps the disk used (nginx's
        # proxy_max_temp_file_size). Without a file the memory window decides.
        if self._file_limit:
            return self._file_write >= self._file_limit
        return self._memory >= self._memory_limit

    def put(self, data: bytes) -> None:
        spilled = self._file_write > self._file_read
        if self._file_limit and (spilled or self._memory + len(data) > self._memory_limit):
            if self._file is None:
                self._file = _temp_file(self._temp_dir, "edgeproxy-resp-")
            try:
                _write_all(self._file.fileno(), data, self._file_write)
            except OSError as exc:
                raise SpoolError("write", self._temp_dir, exc) from None
            self._file_write += len(data)
        else:
            self._chunks.append(data)
            self._memory += len(data)

    def pop(self) -> bytes:
        """The oldest pending piece (call only while `pending`)."""
        if self._chunks:
            chunk = self._chunks.popleft()
            self._memory -= len(chunk)
            return chunk
        assert self._file is not None
        try:
            chunk = os.pread(self._file.fileno(), READ_CHUNK, self._file_read)
            if not chunk:
                raise OSError(errno.EIO, "response temp file shorter than what was written")
            self._file_read += len(chunk)
            if self._file_read == self._file_write:
                # Drained: reuse the file from its start rather than growing it.
                self._file_read = self._file_write = 0
                self._file.truncate(0)
        except OSError as exc:
            raise SpoolError("read", self._temp_dir, exc) from None
        return chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks.clear()
        self._memory = 0

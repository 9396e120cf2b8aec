"""An open file with everything its responses need, shared by the responses that send it."""

from __future__ import annotations

import os
import stat

from edgeproxy.server.static.validators import etag, http_date

# Files up to this size are kept in memory by the open-file cache (cache.py bounds how many).
SMALL_FILE = 16 * 1024


class OpenFile:
    """A regular file opened for serving: its fd and the fields derived from its stat.

    Several responses may send the same OpenFile at once (the cache hands it out again):
    sendfile and pread take explicit offsets, so they never disturb one another. Each user
    calls `release` when done; the fd closes when the last user is done and the cache has
    let it go.
    """

    __slots__ = (
        "cached",
        "content_type",
        "data",
        "etag",
        "fd",
        "last_modified",
        "mtime",
        "mtime_ns",
        "relative",
        "size",
        "users",
    )

    def __init__(self, fd: int, st: os.stat_result, content_type: bytes, relative: str) -> None:
        self.fd = fd
        self.relative = relative  # beneath the location's directory
        self.size = st.st_size
        self.mtime = int(st.st_mtime)
        self.mtime_ns = st.st_mtime_ns
        self.etag = etag(st.st_size, st.st_mtime_ns, st.st_ino)
        self.last_modified = http_date(st.st_mtime)
        self.content_type = content_type
        self.users = 1
        self.cached = False
        # A small file's bytes, read once when the cache takes it: the head and the body
        # then go out in one write (a sendfile of a few bytes costs a system call more).
        self.data: bytes | None = None

    def load_small(self) -> None:
        if self.size <= SMALL_FILE:
            data = os.pread(self.fd, self.size, 0)
            if len(data) == self.size:  # else it changed under us: sent from the fd
                self.data = data

    def acquire(self) -> OpenFile:
        self.users += 1
        return self

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and not self.cached and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def is_directory(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)

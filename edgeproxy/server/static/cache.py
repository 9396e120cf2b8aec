"""A bounded open-file cache, so a hot file costs no open + fstat + close per request.

What a path resolved to (the open file and its precompressed siblings) is kept for at
most VALID seconds; after that the path is resolved again from the root, with every
security check, and a file replaced on disk (a new inode under the same name), deleted, or
turned into a symlink is seen then. Within those seconds each hit still fstat()s the file
it is about to send and drops the entry when its size or modification time changed, so an
edit in place is seen at once. The length announced is always the length of the open
file; a file truncated while it is being sent drops the connection rather than send fewer
bytes than announced (responder.py).

nginx's open_file_cache is off by default and revalidates after open_file_cache_valid
(60s); a shorter bound suits deploys that replace files in place.
"""

from __future__ import annotations

import os

from edgeproxy.server.static.files import OpenFile

VALID = 1.0  # seconds a resolved path is trusted before it is resolved again
# Paths kept per location. Each holds up to three fds (the file, .br, .gz): keep the worst
# case well under a default limit of 1024 open files even with a few static locations. A
# path also holds its small files' bytes (files.SMALL_FILE each, at most three).
MAX_ENTRIES = 64


class Entry:
    """A resolved path: the file and its siblings (coding -> file), as found at `checked`."""

    __slots__ = ("checked", "file", "siblings")

    def __init__(self, file: OpenFile, siblings: tuple[tuple[bytes, OpenFile], ...], now: float):
        self.file = file
        self.siblings = siblings
        self.checked = now
        # The files were just opened for this entry: the cache is their only holder now
        # (each response acquires the one it sends).
        for held in (file, *(sibling for _, sibling in siblings)):
            held.cached = True
            held.users = 0
            held.load_small()

    def drop(self) -> None:
        """Out of the cache: each fd closes once the responses still sending it are done."""
        for file in (self.file, *(sibling for _, sibling in self.siblings)):
            file.cached = False
            if file.users <= 0 and file.fd >= 0:
                os.close(file.fd)
                file.fd = -1


def unchanged(file: OpenFile) -> bool:
    """The open file still has the size and time it had when it was opened."""
    try:
        st = os.fstat(file.fd)
    except OSError:
        return False
    return st.st_size == file.size and st.st_mtime_ns == file.mtime_ns


class FileCache:
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}

    def get(self, key: bytes, now: float) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now - entry.checked >= VALID:
            del self.entries[key]
            entry.drop()
            return None
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            old.drop()
        elif len(entries) >= MAX_ENTRIES:
            oldest = next(iter(entries))
            entries.pop(oldest).drop()
        entries[key] = entry

    def discard(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            entry.drop()

    def __del__(self) -> None:
        # A reload builds new handlers and drops the old ones: their fds close with them.
        self.clear()

    def clear(self) -> None:
        for entry in self.entries.values():
            entry.drop()
        self.entries.clear()

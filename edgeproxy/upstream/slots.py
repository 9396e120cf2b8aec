"""`max_conns` counted once for the whole instance: one lock per request in flight.

Each peer with `max_conns` owns a range of bytes in a file the master creates before it
forks (an anonymous memfd); a request in flight to the peer holds a POSIX lock on one byte
of that range, taken without waiting. A peer is full when every byte of its first
`max_conns` is locked, by any worker. The kernel keeps the count: a lock is released when
its request ends, and every lock of a worker that dies, however it dies, is released with
it, so no crash can leak a slot. Byte-range locks need no shared counter, hence no atomic
increment, which Python cannot do on shared memory.

POSIX locks belong to a process, not to a file descriptor: a process locking a byte it
already holds succeeds again, so each worker remembers which of a peer's bytes it holds.
(And closing any descriptor of the file would drop them all: the one inherited descriptor
stays open for the worker's life.)
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from edgeproxy.config.model import Address

SLOT_STRIDE = 1 << 20  # bytes of the file per peer row: the largest max_conns counted here
# (upstream name, peer address) -> that peer's slots, or None to count per worker.
SlotLookup = Callable[[str, Address], "PeerSlots | None"]


def slot_file() -> int:
    """The descriptor every worker inherits (locks may lie beyond its end: it stays empty)."""
    return os.memfd_create("edgeproxy-slots", os.MFD_CLOEXEC)


class PeerSlots:
    """One peer's range of lock bytes, as one worker sees it."""

    __slots__ = ("base", "fd", "held")

    def __init__(self, fd: int, row: int) -> None:
        self.fd = fd
        self.base = row * SLOT_STRIDE
        self.held: list[int] = []  # the bytes this worker holds, one per request

    def acquire(self, limit: int) -> bool:
        """Take a free slot among the first `limit`; False when all are taken."""
        held = self.held
        if len(held) >= limit:
            return False
        for slot in range(min(limit, SLOT_STRIDE)):
            if slot in held:
                continue
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.base + slot)
            except OSError:
                continue  # another worker holds it (EACCES or EAGAIN)
            held.append(slot)
            return True
        return False

    def release(self) -> None:
        """Give back one slot (any: they are interchangeable)."""
        slot = self.held.pop()
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.base + slot)

    def taken(self, limit: int) -> int:
        """How many of the first `limit` slots are held, by any process (for tests and
        tools: one system call per slot)."""
        count = 0
        for slot in range(limit):
            if slot in self.held:
                count += 1
                continue
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.base + slot)
            except OSError:
                count += 1
                continue
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.base + slot)
        return count

"""The lock that guards a zone's shared table, held for the few field writes of one decision.

Every worker takes it, so it must not stay taken when its holder dies, however it dies
(kill -9 included). Two kinds, one chosen per process at import:

- SpinLock (edgeproxy.limits._spinlock, a small C module built with the compiled build):
  the pid of its holder in a word of a shared page, taken with a compare-and-swap, so a
  lock nobody else holds costs no system call. A waiter spins briefly, then yields the
  CPU; when the holder's pid no longer exists (kill(pid, 0) says ESRCH once its parent
  has reaped it), the waiter takes the lock over from it, as nginx's ngx_shmtx does. The
  master also frees the locks of each worker it reaps (`force_release`), so a pid reused
  by a new process cannot keep a dead worker's lock.
- RecordLock: a POSIX record lock (fcntl F_SETLKW) on one byte of a file, which the
  kernel drops when its holder dies. Two system calls per decision; the fallback where
  the C module is not built (a pure-Python install).

Either way a worker killed in the middle of an update costs at most that one key's state:
the update is a handful of field writes of one row.
"""

from __future__ import annotations

import fcntl
import mmap
import tempfile
from typing import IO, Protocol

try:
    from edgeproxy.limits._spinlock import SpinLock
except ImportError:  # a pure-Python install: no C compiler built it
    HAVE_SPIN_LOCK = False
else:
    HAVE_SPIN_LOCK = True


class ZoneLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting: whether it was taken."""
        ...

    def force_release(self, pid: int, /) -> bool:
        """Free the lock if process `pid` (dead, reaped) still holds it."""
        ...


class RecordLock:
    """One byte of a file, locked with fcntl: the kernel releases it with its holder.
    Record locks belong to the process, so a file descriptor inherited through fork serves
    every worker."""

    __slots__ = ("fd", "file", "offset")

    def __init__(self, file: IO[bytes], offset: int) -> None:
        self.file = file  # kept open for as long as a zone uses it
        self.fd = file.fileno()
        self.offset = offset

    def acquire(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self.offset)

    def release(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.offset)

    def try_acquire(self) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.offset)
        except OSError:
            return False
        return True

    def force_release(self, pid: int, /) -> bool:
        return False  # the kernel released it when `pid` died


def lock_kind() -> str:
    """The kind of zone lock this process makes: "spin" or "record"."""
    return "spin" if HAVE_SPIN_LOCK else "record"


class LockMaker:
    """Makes the zone locks of one store, in the master before it forks: each spin lock
    on a shared page of its own (no two zones' locks on one cache line), record locks on
    the bytes of one unlinked file."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or lock_kind()
        if self.kind not in ("spin", "record") or (self.kind == "spin" and not HAVE_SPIN_LOCK):
            raise ValueError(f"no {self.kind!r} zone lock here (this install has {lock_kind()!r})")
        self._file: IO[bytes] | None = None
        self._made = 0

    def new(self) -> ZoneLock:
        self._made += 1
        if self.kind == "spin":
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            lock: ZoneLock = SpinLock(page, 0)  # holds the page's buffer: it stays mapped
            return lock
        if self._file is None:
            # Unlinked: nothing to clean up, and its record locks die with their holders.
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the store)
        return RecordLock(self._file, self._made - 1)

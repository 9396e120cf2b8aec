"""The zones' lock (edgeproxy.limits.locks), both kinds through the same tests: processes
contending lose no update, and a holder killed with SIGKILL never keeps the lock."""

from __future__ import annotations

import mmap
import os
import select
import signal
import struct
import threading
from collections.abc import Iterator

import pytest

from edgeproxy.config.model import ZoneConfig
from edgeproxy.limits.locks import HAVE_SPIN_LOCK, LockMaker, ZoneLock
from edgeproxy.limits.zones import ZoneStore
from tests.conftest import wait_until

DEADLINE = 10.0  # seconds; the takeover itself is a few scheduler rounds
NOT_BUILT = "the C module edgeproxy.limits._spinlock is not built (a pure-Python tree)"


@pytest.fixture(
    params=[
        pytest.param("spin", marks=pytest.mark.skipif(not HAVE_SPIN_LOCK, reason=NOT_BUILT)),
        "record",
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lock(kind: str) -> ZoneLock:
    # Made before the forks below, as the master makes the zones' locks.
    return LockMaker(kind).new()


def fork_child(body: object) -> int:
    """Run `body()` in a forked child that exits 0 if it returns, 1 if it raises."""
    assert callable(body)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def reaped(pid: int) -> int | None:
    """The exit status of child `pid` if it has ended (reaping it), else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return status if done else None


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Children a test forks: killed and reaped at the end, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def read_with_deadline(fd: int) -> bytes:
    ready, _, _ = select.select([fd], [], [], DEADLINE)
    assert ready, "timed out waiting for a child"
    return os.read(fd, 1)


def test_processes_contending_for_the_lock_lose_no_update(
    lock: ZoneLock, children: list[int]
) -> None:
    # Read, then write back one more: without the lock the two would overwrite each other.
    counter = mmap.mmap(-1, 8, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    field = memoryview(counter).cast("q")
    go_read, go_write = os.pipe()
    increments = 20_000

    def increment() -> None:
        os.read(go_read, 1)
        for _ in range(increments):
            lock.acquire()
            try:
                value = field[0]
                field[0] = value + 1
            finally:
                lock.release()

    children.extend(fork_child(increment) for _ in range(2))
    os.write(go_write, b"xx")  # one byte each: they start together
    statuses: dict[int, int] = {}

    def both_ended() -> bool:
        for pid in children:
            if pid not in statuses and (status := reaped(pid)) is not None:
                statuses[pid] = status
        return len(statuses) == 2

    wait_until(both_ended, timeout=60, what="both children to finish their increments")
    os.close(go_read)
    os.close(go_write)
    assert list(statuses.values()) == [0, 0]
    assert field[0] == 2 * increments
    field.release()


def test_the_parent_takes_the_lock_of_a_child_killed_holding_it(
    lock: ZoneLock, children: list[int]
) -> None:
    ready_r, ready_w = os.pipe()

    def hold_forever() -> None:
        lock.acquire()
        os.write(ready_w, b"x")
        signal.pause()

    holder = fork_child(hold_forever)
    children.append(holder)
    assert read_with_deadline(ready_r) == b"x"
    assert not lock.try_acquire()  # held by the child
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)  # as the master reaps a worker
    children.remove(holder)

    # In a thread, so that a lock kept by the dead child fails the test at the deadline.
    acquired = threading.Event()

    def take() -> None:
        lock.acquire()
        acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert acquired.wait(DEADLINE), "the dead child's lock was never taken over"
    lock.release()
    assert lock.try_acquire()  # released: free again
    lock.release()
    os.close(ready_r)
    os.close(ready_w)


def test_a_waiter_gets_the_lock_when_the_holder_is_killed(
    lock: ZoneLock, children: list[int]
) -> None:
    # As two workers: one killed with the lock, one blocked on it meanwhile.
    held_r, held_w = os.pipe()
    got_r, got_w = os.pipe()

    def hold_forever() -> None:
        lock.acquire()
        os.write(held_w, b"x")
        signal.pause()

    def wait_for_it() -> None:
        lock.acquire()
        os.write(got_w, b"y")
        lock.release()

    holder = fork_child(hold_forever)
    children.append(holder)
    assert read_with_deadline(held_r) == b"x"
    children.append(fork_child(wait_for_it))
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    children.remove(holder)
    assert read_with_deadline(got_r) == b"y"
    for fd in (held_r, held_w, got_r, got_w):
        os.close(fd)


@pytest.mark.skipif(not HAVE_SPIN_LOCK, reason=NOT_BUILT)
def test_the_master_frees_a_spin_lock_whose_dead_owners_pid_was_reused() -> None:
    from edgeproxy.limits._spinlock import SpinLock

    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    spin = SpinLock(page, 0)
    page[0:8] = struct.pack("q", 1)  # as if the dead owner's pid now named init: alive
    assert spin.owner() == 1 and not spin.try_acquire()
    assert not spin.force_release(2)  # not the owner: left alone
    assert spin.force_release(1)
    assert spin.try_acquire() and spin.owner() == os.getpid()
    spin.release()
    assert spin.owner() == 0


@pytest.mark.skipif(not HAVE_SPIN_LOCK, reason=NOT_BUILT)
def test_a_spin_lock_needs_an_aligned_word_inside_its_buffer() -> None:
    from edgeproxy.limits._spinlock import SpinLock

    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    for offset in (-8, 4, mmap.PAGESIZE - 4, mmap.PAGESIZE):
        with pytest.raises(ValueError, match="8-aligned"):
            SpinLock(page, offset)
    with pytest.raises(BufferError):
        SpinLock(b"read-only bytes", 0)


def test_the_master_reclaiming_a_dead_worker_frees_its_zone_locks(kind: str) -> None:
    store = ZoneStore(kind)
    zone = store.rate(ZoneConfig(name="r", kind="rate", rate=1.0))

    def die_holding() -> None:
        zone.lock.acquire()
        os._exit(0)  # dies without releasing

    pid = fork_child(die_holding)
    os.waitpid(pid, 0)
    store.reclaim(pid)  # at once: its pid is not yet reused, but could be
    assert zone.lock.try_acquire()
    zone.lock.release()


def test_asking_for_a_lock_kind_this_install_lacks_says_so() -> None:
    with pytest.raises(ValueError, match="no 'futex' zone lock"):
        LockMaker("futex")
    if not HAVE_SPIN_LOCK:
        with pytest.raises(ValueError, match="no 'spin' zone lock here"):
            LockMaker("spin")

"""max_conns slots: byte-range locks shared by processes, released when a holder dies."""

from __future__ import annotations

import contextlib
import os
import signal

from edgeproxy.upstream.slots import PeerSlots, slot_file


def test_slots_are_taken_up_to_the_limit_and_given_back() -> None:
    fd = slot_file()
    try:
        slots = PeerSlots(fd, row=3)
        assert [slots.acquire(2) for _ in range(3)] == [True, True, False]
        assert slots.taken(2) == 2
        slots.release()
        assert slots.taken(2) == 1
        assert slots.acquire(2)
        other_row = PeerSlots(fd, row=4)  # another peer: its own range
        assert other_row.acquire(1)
    finally:
        os.close(fd)


def test_another_process_sees_the_count_and_its_death_frees_its_slots() -> None:
    fd = slot_file()
    ready_r, ready_w = os.pipe()  # the child says it holds its slots
    hold_r, hold_w = os.pipe()  # the child waits on this until it is killed
    pid = os.fork()
    if pid == 0:  # the child: a worker holding two slots of a peer capped at 3
        code = 1
        try:
            child = PeerSlots(fd, row=0)
            code = 0 if child.acquire(3) and child.acquire(3) else 2
            os.write(ready_w, b"x" if code == 0 else b"!")
            os.read(hold_r, 1)
        finally:
            os._exit(code)
    os.close(ready_w)  # a child that dies early gives EOF here, not a hang
    os.close(hold_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        mine = PeerSlots(fd, row=0)
        assert mine.taken(3) == 2
        assert mine.acquire(3)
        assert not mine.acquire(3)  # one instance-wide count: 2 there + 1 here
        os.kill(pid, signal.SIGKILL)  # no cleanup runs: the kernel drops its locks
        os.waitpid(pid, 0)
        assert mine.taken(3) == 1
        assert mine.acquire(3) and mine.acquire(3)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for closing in (fd, ready_r, hold_w):
            os.close(closing)

"""The timer wheel with a fake clock: fires late by at most RESOLUTION, never early."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from edgeproxy.timer import RESOLUTION, LazyTimer


class FakeLoop:
    """Just enough of a loop: a settable clock and call_at handles run by `advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.scheduled: list[tuple[float, Any, bool]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Any:
        entry = [when, callback, False]
        self.scheduled.append(entry)  # type: ignore[arg-type]

        class Handle:
            def cancel(self) -> None:
                entry[2] = True

        return Handle()

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            due = [e for e in self.scheduled if not e[2] and e[0] <= target]
            if not due:
                break
            entry = min(due, key=lambda e: e[0])
            entry[2] = True
            self.now = max(self.now, entry[0])
            entry[1]()
        self.now = target


def make(loop: FakeLoop, fired: list[str], name: str) -> LazyTimer:
    return LazyTimer(cast(asyncio.AbstractEventLoop, loop), lambda: fired.append(name))


def test_fires_after_the_deadline_within_the_resolution() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    timer = make(loop, fired, "a")
    timer.start(1.0)
    loop.advance(0.99)
    assert fired == []
    loop.advance(RESOLUTION + 0.02)
    assert fired == ["a"]


def test_touch_moves_the_deadline_later() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    timer = make(loop, fired, "a")
    timer.start(1.0)
    loop.advance(0.8)
    timer.touch(1.0)  # progress: the gap restarts
    loop.advance(0.9)
    assert fired == []
    loop.advance(0.3)
    assert fired == ["a"]


def test_start_earlier_than_the_filed_deadline_refiles() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    timer = make(loop, fired, "a")
    timer.start(75.0)  # keep-alive
    timer.start(0.5)  # then a head timeout: must not wait for the 75 s bucket
    loop.advance(0.5 + RESOLUTION + 0.01)
    assert fired == ["a"]


def test_stop_and_suspend_prevent_expiry() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    stopped, suspended = make(loop, fired, "stopped"), make(loop, fired, "suspended")
    stopped.start(0.5)
    suspended.start(0.5)
    stopped.stop()
    suspended.suspend()
    loop.advance(5.0)
    assert fired == []
    suspended.start(0.5)  # a suspended timer works again when restarted
    loop.advance(0.5 + RESOLUTION + 0.01)
    assert fired == ["suspended"]


def test_an_expiry_that_stops_another_due_timer_wins() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    second = make(loop, fired, "second")
    first = LazyTimer(
        cast(asyncio.AbstractEventLoop, loop), lambda: (fired.append("first"), second.stop())
    )
    first.start(0.5)
    second.start(0.5)
    loop.advance(1.0)
    assert fired in (["first"], ["second", "first"])
    assert fired.count("second") <= 1

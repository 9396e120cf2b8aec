"""The timer wheel with a fake clock: fires late by at most RESOLUTION, never early."""

from __future__ import annotations

import asyncio
from typing import cast

from edgeproxy.timer import RESOLUTION, LazyTimer
from tests.unit.fake_loop import FakeLoop


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


# --- regressions (issue 18): what one timer does must not delay another ---


def test_a_deadline_moved_later_does_not_hold_back_an_earlier_bucket() -> None:
    """The issue's reproduction: the keep-alive timer is swept first and re-filed ten
    seconds on; the short timeout's bucket, due long before, must still be swept then."""
    loop = FakeLoop()
    fired: list[tuple[str, float]] = []
    keepalive = LazyTimer(
        cast(asyncio.AbstractEventLoop, loop), lambda: fired.append(("ka", loop.now))
    )
    short = LazyTimer(
        cast(asyncio.AbstractEventLoop, loop), lambda: fired.append(("short", loop.now))
    )
    keepalive.start(0.3)
    loop.advance(0.05)
    short.start(0.6)
    short_deadline = loop.now + 0.6
    keepalive.touch(10)  # progress moves the keep-alive deadline out
    loop.advance(3)
    assert [name for name, _ in fired] == ["short"]
    when = fired[0][1]
    assert short_deadline <= when <= short_deadline + RESOLUTION


async def test_a_deadline_moved_later_does_not_hold_back_an_earlier_bucket_on_a_real_loop() -> None:
    """The same on the event loop the tests run on (uvloop), as the issue showed it."""
    loop = asyncio.get_running_loop()
    short_fired: asyncio.Future[float] = loop.create_future()
    keepalive = LazyTimer(loop, lambda: None)
    short = LazyTimer(loop, lambda: short_fired.set_result(loop.time()))
    try:
        keepalive.start(0.3)
        await asyncio.sleep(0.05)
        short.start(0.6)
        short_deadline = loop.time() + 0.6
        keepalive.touch(10)
        # Before the fix this came near the keep-alive's ten seconds.
        when = await asyncio.wait_for(short_fired, 3)
        assert when >= short_deadline
    finally:
        keepalive.close()
        short.close()


def test_an_expiry_may_stop_a_timer_due_in_the_same_sweep() -> None:
    """A stalled loop sweeps several buckets at once; an expiry that stops the only timer
    of a later bucket must not break the sweep (it used to look that bucket up anyway)."""
    loop = FakeLoop()
    fired: list[str] = []
    later = make(loop, fired, "later")

    def on_first() -> None:
        fired.append("first")
        later.stop()

    first = LazyTimer(cast(asyncio.AbstractEventLoop, loop), on_first)
    other = make(loop, fired, "other")
    first.start(0.2)
    later.start(0.5)
    other.start(0.8)
    loop.stall(1.0)  # the loop was busy: all three buckets are due at the next sweep
    loop.advance(0)
    assert fired == ["first", "other"]


def test_timers_filed_by_an_expiry_are_swept_on_time() -> None:
    """An expiry arms other timers (a new phase, a linger): their buckets get a sweep."""
    loop = FakeLoop()
    fired: list[tuple[str, float]] = []
    follow_up = LazyTimer(
        cast(asyncio.AbstractEventLoop, loop), lambda: fired.append(("follow-up", loop.now))
    )
    far = make(loop, [], "far")

    def on_first() -> None:
        fired.append(("first", loop.now))
        far.touch(30)  # something else moves out meanwhile
        follow_up.start(0.5)

    first = LazyTimer(cast(asyncio.AbstractEventLoop, loop), on_first)
    far.start(0.3)
    first.start(0.3)
    loop.advance(2)
    assert [name for name, _ in fired] == ["first", "follow-up"]
    assert fired[0][1] + 0.5 <= fired[1][1] <= fired[0][1] + 0.5 + RESOLUTION


def test_a_failing_callback_does_not_strand_the_timers_beside_it() -> None:
    loop = FakeLoop()
    fired: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    timers = [LazyTimer(cast(asyncio.AbstractEventLoop, loop), fail)]
    timers += [make(loop, fired, str(n)) for n in range(5)]
    for timer in timers:
        timer.start(0.5)  # all in one bucket, swept in no particular order
    loop.advance(1)
    assert sorted(fired) == ["0", "1", "2", "3", "4"]
    assert [type(error["exception"]) for error in loop.errors] == [RuntimeError]
    timers[1].start(0.5)  # the wheel still works afterwards
    loop.advance(1)
    assert fired.count("0") == 2


def test_a_sweep_at_a_slots_exact_time_sweeps_it_whatever_the_rounding() -> None:
    """43 * 0.1 / 0.1 is just under 43 in floating point: a sweep that trusted that
    quotient found its own bucket not yet due and called itself again at the same time."""
    assert (43 * RESOLUTION) / RESOLUTION < 43  # the rounding this test is about
    loop = FakeLoop(now=4.2)
    fired: list[str] = []
    timer = make(loop, fired, "a")
    timer.start(0.1)
    loop.advance(0.2)  # the fake loop fails the test if a callback spins at one instant
    assert fired == ["a"]


def test_a_loop_running_callbacks_a_hair_early_neither_spins_nor_fires_early() -> None:
    """asyncio runs a callback up to its clock resolution before its time."""
    loop = FakeLoop(early=1e-9)
    fired: list[float] = []
    timer = LazyTimer(cast(asyncio.AbstractEventLoop, loop), lambda: fired.append(loop.now))
    for timeout in (0.1, 0.25, 1.0, 1.05):
        timer.start(timeout)
        deadline = loop.now + timeout
        loop.advance(timeout + 2 * RESOLUTION)
        assert deadline <= fired[-1] <= deadline + RESOLUTION + 1e-6


def test_touch_earlier_refiles_and_touch_never_revives_a_suspended_timer() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    moved, suspended, stopped = (make(loop, fired, n) for n in ("moved", "suspended", "stopped"))
    moved.start(60)
    moved.touch(0.5)  # earlier: must not wait for the 60 s bucket
    suspended.start(0.5)
    suspended.suspend()
    suspended.touch(0.5)  # still filed, but suspended: stays so
    stopped.start(0.5)
    stopped.stop()
    stopped.touch(0.5)
    loop.advance(0.5 + RESOLUTION + 0.01)
    assert fired == ["moved"]
    loop.advance(100)
    assert fired == ["moved"]

"""Connection timeouts on a coarse timer wheel: no loop timer per request.

Every connection has one LazyTimer; a request moves its deadline several times (header,
body, keep-alive, upstream read). Scheduling and cancelling an event-loop timer each time
costs more than the I/O itself, so timers are kept in buckets of RESOLUTION seconds that a
single loop callback sweeps. Moving a deadline later is a float store (the bucket re-files
the timer when it comes due); moving it earlier or stopping is a set operation. A timeout
fires at most RESOLUTION late, never early.

What keeps that promise is one invariant of the wheel: whenever a bucket is filed, the
loop callback is due no later than the earliest bucket's slot. Outside a sweep, `add`
keeps it by moving the callback earlier when needed. During a sweep, expiries and re-filed
timers may file, move or stop any timer, so `add` only files, and the sweep schedules the
next callback for the earliest bucket left once it is done.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from typing import Final

RESOLUTION: Final = 0.1  # seconds; timeouts here are whole seconds in practice, tests use >= 250ms
SUSPENDED: Final = 1e12  # a deadline that never comes (and still fits a slot number)
# A sweep counts a slot as come when the loop runs it this close before the slot's time:
# `slot * RESOLUTION` and `now / RESOLUTION` round differently, and asyncio runs a callback
# up to its clock resolution early. Without it such a sweep would find its own bucket not
# yet due and call itself again at once until the clock moved on. A timer whose deadline
# falls in this gap is re-filed one slot on, so it can be late by RESOLUTION plus this.
SLOT_TOLERANCE: Final = 1e-7  # seconds


class TimerWheel:
    """Buckets of timers by deadline slot, swept by one loop callback at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, set[LazyTimer]] = {}
        self._next_slot = 0  # every slot below this has been swept
        self._handle: asyncio.TimerHandle | None = None
        self._handle_slot = 0
        self._sweeping = False

    def add(self, timer: LazyTimer) -> None:
        slot = max(math.ceil(timer.deadline / RESOLUTION), self._next_slot)
        timer.slot = slot
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = {timer}
        else:
            bucket.add(timer)
        if self._sweeping:
            return  # the running sweep schedules the next one when it is done
        if self._handle is None or slot < self._handle_slot:
            self._schedule(slot)

    def remove(self, timer: LazyTimer) -> None:
        bucket = self._buckets.get(timer.slot)
        if bucket is not None:
            bucket.discard(timer)
            if not bucket:
                del self._buckets[timer.slot]
        timer.slot = -1
        # The callback stays where it is: a sweep that finds nothing due costs less than
        # cancelling and rescheduling on every stop.

    def _schedule(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_slot = slot
        self._handle = self._loop.call_at(slot * RESOLUTION, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self._loop.time()
        current = math.floor((now + SLOT_TOLERANCE) / RESOLUTION)
        self._next_slot = current + 1  # timers filed from here on land in later slots
        buckets = self._buckets
        due = sorted([slot for slot in buckets if slot <= current])
        self._sweeping = True
        try:
            for slot in due:
                bucket = buckets.pop(slot, None)
                if bucket is None:
                    continue  # emptied by an expiry earlier in this sweep
                for timer in bucket:
                    if timer.slot != slot:
                        continue  # stopped or re-filed by an expiry earlier in this sweep
                    timer.slot = -1
                    if timer.deadline >= SUSPENDED:
                        continue  # suspended: the next start() files it afresh
                    if timer.deadline > now:
                        self.add(timer)  # moved later since it was filed: file it again
                    else:
                        self._expire(timer)
        finally:
            self._sweeping = False
            if buckets:
                self._schedule(min(buckets))

    def _expire(self, timer: LazyTimer) -> None:
        try:
            timer.expire()
        except Exception as exc:
            # Report it as the loop reports a failed callback, and go on: the other timers
            # in this bucket have been taken off the wheel and must still fire.
            self._loop.call_exception_handler(
                {"message": "timeout callback failed", "exception": exc}
            )


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerWheel] = (
    weakref.WeakKeyDictionary()
)


_last: tuple[asyncio.AbstractEventLoop | None, TimerWheel | None] = (None, None)


def wheel_for(loop: asyncio.AbstractEventLoop) -> TimerWheel:
    """The loop's wheel; every new connection asks, so the last answer is kept at hand."""
    global _last
    last_loop, last_wheel = _last
    if last_loop is loop and last_wheel is not None:
        return last_wheel
    wheel = _WHEELS.get(loop)
    if wheel is None:
        wheel = _WHEELS[loop] = TimerWheel(loop)
    _last = (loop, wheel)
    return wheel


class LazyTimer:
    """One deadline with a callback; re-arm, extend or stop it as often as needed.

    Armed by `start`; disarmed by `stop`, `suspend`, `close` or by firing. Once armed, it
    fires once, no earlier than its deadline and at most RESOLUTION after it.
    """

    __slots__ = ("__weakref__", "_loop", "_on_expiry", "_wheel", "deadline", "slot")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._wheel = wheel_for(loop)
        self._on_expiry = on_expiry
        self.deadline = 0.0
        self.slot = -1  # the wheel bucket holding this timer; -1 = not filed

    def start(self, timeout: float) -> None:
        """Expire `timeout` seconds from now."""
        self.deadline = deadline = self._loop.time() + timeout
        slot = self.slot
        if slot >= 0:
            if slot * RESOLUTION <= deadline:
                return  # filed earlier than needed: re-filed lazily when its bucket is swept
            self._wheel.remove(self)
        self._wheel.add(self)

    def touch(self, timeout: float) -> None:
        """Move an armed deadline to `timeout` seconds from now, after progress; no effect
        on a stopped or suspended timer."""
        deadline = self._loop.time() + timeout
        if deadline >= self.deadline:
            self.deadline = deadline  # later (a stopped timer is not filed: no effect either)
        elif self.deadline < SUSPENDED and self.slot >= 0:
            # Earlier, which callers rarely ask for: armed, so the same as a new start.
            self.deadline = deadline
            if self.slot * RESOLUTION > deadline:
                self._wheel.remove(self)
                self._wheel.add(self)

    def stop(self) -> None:
        if self.slot >= 0:
            self._wheel.remove(self)

    def suspend(self) -> None:
        """Stop for a moment, cheaply: the next `start` most likely finds the timer still
        filed and only stores a float. Used between phases of one busy connection."""
        self.deadline = SUSPENDED

    def expire(self) -> None:
        self._on_expiry()

    def close(self) -> None:
        """Stop for good, and let go of the callback: it is usually a bound method of the
        timer's owner, which holds the timer, so that the two would otherwise only be
        freed by the cyclic garbage collector."""
        self.stop()
        self._on_expiry = _nothing


def _nothing() -> None:
    pass

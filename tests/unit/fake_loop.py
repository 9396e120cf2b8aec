"""A fake event loop for the timer wheel: a clock the test drives, and call_at handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# An instant at which the same callback ran this many times without the clock moving is a
# wheel that calls itself again and again (a real loop would spin there).
SPIN_LIMIT = 10


class _Handle:
    __slots__ = ("callback", "cancelled", "run_at")

    def __init__(self, run_at: float, callback: Callable[[], object]) -> None:
        self.run_at = run_at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of a loop: time(), call_at() and call_exception_handler().

    `advance` runs the due handles in time order, each at its own instant. `early` makes
    handles run that much before their time, as asyncio does within its clock resolution.
    `stall` moves the clock on without running anything, as a blocked loop would.
    """

    def __init__(self, now: float = 1000.0, early: float = 0.0) -> None:
        self.now = now
        self.early = early
        self.last_stall_end = now
        self.errors: list[dict[str, Any]] = []
        self._handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Handle:
        run_at = when - self.early if when - self.early > self.now else max(when, self.now)
        handle = _Handle(run_at, callback)
        self._handles.append(handle)
        return handle

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def stall(self, seconds: float) -> None:
        self.now += seconds
        self.last_stall_end = self.now

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        runs_at_this_instant = 0
        while True:
            self._handles = [h for h in self._handles if not h.cancelled]
            due = [h for h in self._handles if h.run_at <= target]
            if not due:
                break
            handle = min(due, key=lambda h: h.run_at)
            handle.cancelled = True  # done: it runs once
            if handle.run_at > self.now:
                self.now = handle.run_at
                runs_at_this_instant = 0
            runs_at_this_instant += 1
            assert runs_at_this_instant <= SPIN_LIMIT, f"a callback spins at {self.now!r}"
            handle.callback()
        self.now = target

    @property
    def pending(self) -> int:
        return sum(not h.cancelled for h in self._handles)

"""One lazily re-armed timer per connection.

Gap timeouts (body, send, upstream read) move their deadline on every read or write;
rescheduling a loop timer each time would cost more than the I/O itself. Instead the
deadline is a plain float, and when the timer fires early it re-arms for the new deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LazyTimer:
    __slots__ = ("_handle", "_loop", "_on_expiry", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._handle: asyncio.TimerHandle | None = None
        self.deadline = 0.0

    def start(self, timeout: float) -> None:
        """Expire `timeout` seconds from now (re-arming only if the handle would be late)."""
        self.deadline = deadline = self._loop.time() + timeout
        handle = self._handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)

    def touch(self, timeout: float) -> None:
        """Push the deadline out after progress; the handle re-arms itself lazily."""
        self.deadline = self._loop.time() + timeout

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._loop.time() < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._fire)
            return
        self._on_expiry()

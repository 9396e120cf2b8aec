"""How signals reach the master's loop: the handlers only queue them, and a pipe wakes the
loop (set_wakeup_fd), which then does the work outside any signal handler.

The same pipe is given to the workers, which write to it when they become ready, so that
the master notices at once rather than at its next tick.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections import deque
from collections.abc import Callable, Iterable
from types import FrameType

Handler = Callable[[int, FrameType | None], object] | int | None


class SignalQueue:
    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self.queue: deque[int] = deque()
        self.fds = (-1, -1)  # the wake-up pipe: (read, write), once installed
        self._previous: dict[signal.Signals, Handler] = {}

    def install(self) -> None:
        """Queue `signals` from now on (until restore())."""
        self.fds = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = {sig: signal.signal(sig, self._enqueue) for sig in self.signals}
        signal.set_wakeup_fd(self.fds[1], warn_on_full_buffer=False)

    def restore(self) -> None:
        """The previous handlers again, and the pipe closed."""
        signal.set_wakeup_fd(-1)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        for fd in self.fds:
            os.close(fd)

    def wait(self, timeout: float) -> None:
        """Sleep until a signal or a worker wakes the loop, or `timeout` passes."""
        with contextlib.suppress(InterruptedError):
            select.select([self.fds[0]], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fds[0], 512):
                pass

    def pop(self) -> signal.Signals | None:
        """The oldest signal not handled yet."""
        return signal.Signals(self.queue.popleft()) if self.queue else None

    def _enqueue(self, signum: int, frame: FrameType | None) -> None:
        self.queue.append(signum)  # only this: the loop does the work, outside the handler

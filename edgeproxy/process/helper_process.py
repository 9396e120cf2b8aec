"""What the master does alike for each of its helper processes (the health prober, the
metrics exporter): remember its pid, kill and reap it, and restart it after a crash no
faster than RESTART_DELAY."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

log = logging.getLogger("edgeproxy.master")

RESTART_DELAY = 1.0  # after a helper died: no crash loop faster than this


class HelperProcess:
    """One helper child of the master; a subclass forks it (setting `pid`)."""

    what = "helper"  # for the error log

    def __init__(self) -> None:
        self.pid: int | None = None
        self.start_at = 0.0  # after a crash: not restarted before this (monotonic)

    def fork_failed(self, exc: OSError) -> None:
        log.error("cannot start the %s: %s", self.what, exc)
        self.start_at = time.monotonic() + RESTART_DELAY

    def due(self, now: float) -> bool:
        """Whether it should be started again now (it died, and its delay is over)."""
        return self.pid is None and now >= self.start_at

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            # Killed and reaped here, not left to the loop: the next one must not overlap it.
            kill_and_reap(pid)

    def exited(self, pid: int, how: str) -> bool:
        """Whether `pid` (reaped by the master) was this helper; it is restarted later."""
        if pid != self.pid:
            return False
        self.pid = None
        log.error("%s %d died (%s); starting a new one", self.what, pid, how)
        self.start_at = time.monotonic() + RESTART_DELAY
        return True


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child of ours and wait for it (either may have happened already)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)

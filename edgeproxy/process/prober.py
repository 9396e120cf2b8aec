"""The health prober process: active health checks, once for the whole instance.

The master forks one prober when its config has a `health_check` anywhere. The prober runs
its own asyncio loop (edgeproxy.upstream.health.Prober) and writes each server's verdict
into the shared peer rows every worker reads, so a verdict reaches every worker at once and
each server gets one probe per interval whatever the number of workers. A reload replaces
the prober (the old one is killed and reaped before the new one is forked, so probes are
never doubled); a prober that dies is started again; the master kills it when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable

from edgeproxy.config.model import Config
from edgeproxy.process.shared import SharedState
from edgeproxy.process.workers import CHILD_DEFAULTS, CHILD_IGNORES, drop_privileges
from edgeproxy.upstream.health import Prober, targets_of

log = logging.getLogger("edgeproxy.master")

RESTART_DELAY = 1.0  # after a prober died: no crash loop faster than this
ORPHAN_CHECK = 1.0  # how often the prober looks whether its master is still there


def wanted(config: Config) -> bool:
    return any(upstream.health_check is not None for upstream in config.upstreams.values())


class ProberControl:
    """The master's handle on its prober: start, replace, stop, and restart after a crash."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self.pid: int | None = None
        self.start_at = 0.0  # after a crash: not restarted before this (monotonic)

    def start(self, config: Config, inherited: Iterable[socket.socket], *, fresh: bool) -> None:
        if self.pid is not None or not wanted(config):
            return
        try:
            self.pid = fork_prober(config, self.shared, inherited, fresh=fresh)
        except OSError as exc:
            log.error("cannot start the health prober: %s", exc)
            self.start_at = time.monotonic() + RESTART_DELAY
            return
        log.info("health prober %d started", self.pid)

    def replace(self, config: Config, inherited: Iterable[socket.socket]) -> None:
        """A reload: the new config's prober, its servers all starting healthy."""
        self.stop()
        self.start(config, inherited, fresh=True)

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            return
        # Killed and reaped here, not left to the loop: the next prober must not overlap it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def exited(self, pid: int, how: str) -> bool:
        """Whether `pid` (reaped by the master) was the prober; it is restarted later."""
        if pid != self.pid:
            return False
        self.pid = None
        log.error("health prober %d died (%s); starting a new one", pid, how)
        self.start_at = time.monotonic() + RESTART_DELAY
        return True

    def keep(self, config: Config, inherited: Iterable[socket.socket], now: float) -> None:
        """Start the prober again if it died (keeping the verdicts it had written)."""
        if self.pid is None and now >= self.start_at:
            self.start(config, inherited, fresh=False)


def fork_prober(
    config: Config, shared: SharedState, inherited: Iterable[socket.socket], *, fresh: bool
) -> int:
    master_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _child(config, shared, inherited, master_pid, fresh)
    except BaseException:
        log.exception("health prober crashed")
    finally:
        os._exit(code)  # never return into the master's loop


def _child(
    config: Config,
    shared: SharedState,
    inherited: Iterable[socket.socket],
    master_pid: int,
    fresh: bool,
) -> int:
    signal.set_wakeup_fd(-1)
    for sig in CHILD_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    for sig in CHILD_DEFAULTS:
        signal.signal(sig, signal.SIG_DFL)
    for sock in inherited:
        sock.close()  # kept open here, a listening socket would outlive its closing
    drop_privileges(config)
    targets = targets_of(config, shared.peers.view, fresh=fresh)
    asyncio.run(_serve(Prober(targets), master_pid))
    return 0


async def _serve(prober: Prober, master_pid: int) -> None:
    task = asyncio.create_task(prober.run())
    while os.getppid() == master_pid and not task.done():
        await asyncio.sleep(ORPHAN_CHECK)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

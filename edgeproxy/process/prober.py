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
from collections.abc import Iterable

from edgeproxy.config.model import Config
from edgeproxy.process.helper_process import HelperProcess
from edgeproxy.process.shared import SharedState
from edgeproxy.process.workers import CHILD_DEFAULTS, CHILD_IGNORES, drop_privileges
from edgeproxy.upstream.health import Prober, targets_of

log = logging.getLogger("edgeproxy.master")

ORPHAN_CHECK = 1.0  # how often the prober looks whether its master is still there


def wanted(config: Config) -> bool:
    return any(upstream.health_check is not None for upstream in config.upstreams.values())


class ProberControl(HelperProcess):
    """The master's handle on its prober: start, replace, stop, and restart after a crash."""

    what = "health prober"

    def __init__(self, shared: SharedState) -> None:
        super().__init__()
        self.shared = shared

    def start(self, config: Config, inherited: Iterable[socket.socket], *, fresh: bool) -> None:
        if self.pid is not None or not wanted(config):
            return
        try:
            self.pid = fork_prober(config, self.shared, inherited, fresh=fresh)
        except OSError as exc:
            self.fork_failed(exc)
            return
        log.info("health prober %d started", self.pid)

    def replace(self, config: Config, inherited: Iterable[socket.socket]) -> None:
        """A reload: the new config's prober, its servers all starting healthy."""
        self.stop()
        self.start(config, inherited, fresh=True)

    def keep(self, config: Config, inherited: Iterable[socket.socket], now: float) -> None:
        """Start the prober again if it died (keeping the verdicts it had written)."""
        if self.due(now):
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

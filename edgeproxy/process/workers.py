"""Worker processes as the master sees them, the boot-failure policy, and what a forked
child does before it serves."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeproxy.config.model import Address, Config
from edgeproxy.errors import ConfigError
from edgeproxy.metrics.binding import WorkerMetrics
from edgeproxy.process.shared import SharedState

# Imported here, by the master, so that a worker does not import after it switched users
# (it may no longer be allowed to read the installed packages by then).
from edgeproxy.server.tls import tls_contexts
from edgeproxy.server.worker import run_worker
from edgeproxy.upstream.slots import PeerSlots

log = logging.getLogger("edgeproxy.master")

BOOT_ERROR = 3  # exit status of a worker that could not start serving (as gunicorn's)
# Signals the master handles; a child resets them. The ones a worker handles itself in its
# loop are ignored until then (SIGTTIN/SIGTTOU would otherwise stop it, SIGQUIT dump core).
CHILD_IGNORES = (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)
CHILD_DEFAULTS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


@dataclass(eq=False)
class Generation:
    """One loaded config and the workers started from it; a reload starts the next one."""

    number: int
    config: Config


@dataclass(eq=False)
class WorkerProc:
    pid: int
    slot: int  # which SO_REUSEPORT socket of each TCP address it accepts on
    row: int  # its row in the shared worker table (heartbeat, ready)
    generation: Generation
    started: float  # monotonic
    ready: bool = False
    retiring: bool = False  # told to stop; not replaced when it exits
    kill_at: float | None = None  # SIGKILL then, if it is still alive
    killed: bool = False  # the master already SIGKILLed it


class BootGuard:
    """Workers that died before serving, in a row: retry after growing delays, then give up.

    A boot failure is nearly always permanent (a log file the worker may not open, a user
    it cannot become), so a few quick retries cover a passing cause, and then the master
    stops with the worker's error instead of forking forever.
    """

    def __init__(self, limit: int = 5, first_delay: float = 0.1, max_delay: float = 2.0) -> None:
        self.limit = limit
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failures = 0

    def failed(self) -> float | None:
        """Count one failure: the delay before the next try, or None to give up."""
        self.failures += 1
        if self.failures >= self.limit:
            return None
        delay: float = self.first_delay * 2 ** (self.failures - 1)
        return min(self.max_delay, delay)

    def booted(self) -> None:
        self.failures = 0


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


# --- privileges and log files ---


def account_ids(config: Config) -> tuple[int, int] | None:
    """(uid, gid) the workers switch to, or None to stay as the master is."""
    if (config.user is None and config.group is None) or os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(config.user) if config.user else None
    uid = entry.pw_uid if entry else os.getuid()
    if config.group:
        gid = grp.getgrnam(config.group).gr_gid
    else:
        gid = entry.pw_gid if entry else os.getgid()
    return uid, gid


def drop_privileges(config: Config) -> None:
    ids = account_ids(config)
    if ids is None:
        return
    uid, gid = ids
    if config.user:
        os.initgroups(config.user, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def prepare_log_files(config: Config) -> None:
    """Create the log files (owned by the workers' user) so that a worker can open them.

    Done by the master at start and on every USR1, before the workers reopen, as nginx does.
    """
    ids = account_ids(config)
    targets = [("error_log", config.error_log.path)]
    if config.access_log.format != "off":
        targets.append(("access_log", config.access_log.path))
    for key, path in targets:
        if path in ("stdout", "stderr"):
            continue
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
            if ids is not None:
                os.chown(path, *ids)
        except OSError as exc:
            raise ConfigError(key, f"cannot open {path}: {exc.strerror or exc}") from None


# --- the child side ---


class ChildHooks:
    """The worker's link to the master (edgeproxy.server.worker.WorkerHooks)."""

    def __init__(self, shared: SharedState, row: int, master_pid: int, wake_fd: int) -> None:
        self._shared = shared
        self._row = row
        self._master_pid = master_pid
        self._wake_fd = wake_fd
        self._pid = os.getpid()
        self.is_ready = False
        self.heartbeat_interval = 1.0

    def peer_health(self, upstream: str, address: Address) -> memoryview[float] | None:
        return self._shared.peers.view(upstream, address)

    def peer_slots(self, upstream: str, address: Address) -> PeerSlots | None:
        return self._shared.peer_slots(upstream, address)

    def metrics(self, config: Config) -> WorkerMetrics | None:
        store = self._shared.metrics
        if store is None or config.metrics is None:
            return None
        row = store.row(self._row)
        if row is None:  # past the store's rows: counted, but in private memory
            row = memoryview(bytearray(8 * store.capacity)).cast("d")
        return WorkerMetrics(row, store.registry)

    def ready(self) -> None:
        self._shared.workers.set_ready(self._row)
        self.is_ready = True
        with contextlib.suppress(OSError):  # a full pipe wakes it just as well
            os.write(self._wake_fd, b"r")  # wake the master now rather than at its next tick

    def beat(self) -> bool:
        self._shared.workers.beat(self._row, self._pid)
        return os.getppid() == self._master_pid


def fork_worker(
    config: Config,
    sockets: Mapping[Address, socket.socket],
    shared: SharedState,
    row: int,
    wake_fds: tuple[int, int],
    inherited: Iterable[socket.socket],
) -> int:
    """Fork a worker serving `sockets`; its pid. `inherited`: the master's other sockets."""
    master_pid = os.getpid()
    try:
        tls_contexts(config)  # built once, before the fork: the workers share ticket keys
    except OSError as exc:  # the worker builds its own, and fails to start with the reason
        log.error("cannot load a certificate: %s", exc)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _child(config, sockets, shared, row, master_pid, wake_fds, inherited)
    except BaseException:
        log.exception("worker crashed")
    finally:
        os._exit(code)  # never return into the master's loop


def _child(
    config: Config,
    sockets: Mapping[Address, socket.socket],
    shared: SharedState,
    row: int,
    master_pid: int,
    wake_fds: tuple[int, int],
    inherited: Iterable[socket.socket],
) -> int:
    signal.set_wakeup_fd(-1)
    for sig in CHILD_IGNORES:
        signal.signal(sig, signal.SIG_IGN)
    for sig in CHILD_DEFAULTS:
        signal.signal(sig, signal.SIG_DFL)
    os.close(wake_fds[0])
    mine = {id(sock) for sock in sockets.values()}
    for sock in inherited:
        # Another slot's socket kept open here would keep it in the SO_REUSEPORT group
        # after the master closed it, and connections would be hashed to a dead end.
        if id(sock) not in mine:
            sock.close()
    hooks = ChildHooks(shared, row, master_pid, wake_fds[1])
    hooks.heartbeat_interval = min(1.0, config.worker_heartbeat_timeout / 4)
    try:
        drop_privileges(config)
        run_worker(config, sockets, hooks)
    except Exception as exc:
        if hooks.is_ready:
            raise
        # An OSError says it all (a file it may not open); anything else is a bug: traceback.
        log.error("worker failed to start: %s", exc, exc_info=not isinstance(exc, OSError))
        return BOOT_ERROR
    return 0

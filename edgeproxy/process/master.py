"""The master: binds the listening sockets, forks the workers, and runs them by signal.

It never serves a request. Signal handlers only enqueue the signal (signal_queue.py); the
loop dispatches each to the handle_<name> method SIGNAL_HANDLERS names
(gunicorn's arbiter), then reaps children, checks heartbeats and deadlines, and brings the
workers to the wanted number. Signals mean what they mean to nginx.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time

from edgeproxy import build_kind
from edgeproxy.config.loader import MAX_WORKERS
from edgeproxy.config.model import Config
from edgeproxy.errors import ConfigError
from edgeproxy.limits.zones import store as zone_store
from edgeproxy.logging import reopen_error_log, setup_error_log
from edgeproxy.process.exporter import MetricsControl
from edgeproxy.process.fd_limit import raise_fd_limit
from edgeproxy.process.pidfile import OwnPidFile, other_master
from edgeproxy.process.prober import ProberControl
from edgeproxy.process.reload import Reloader
from edgeproxy.process.shared import SharedState
from edgeproxy.process.signal_queue import SignalQueue
from edgeproxy.process.sockets import ListenSet
from edgeproxy.process.workers import (
    BootGuard,
    Generation,
    WorkerProc,
    describe_status,
    fork_worker,
    prepare_log_files,
)
from edgeproxy.server.listeners import listen_addresses

log = logging.getLogger("edgeproxy.master")

SIGNAL_HANDLERS: dict[signal.Signals, str] = {
    signal.SIGHUP: "handle_hup",  # reload the config
    signal.SIGQUIT: "handle_quit",  # graceful shutdown
    signal.SIGTERM: "handle_term",  # fast shutdown
    signal.SIGINT: "handle_int",  # fast shutdown (Ctrl-C)
    signal.SIGUSR1: "handle_usr1",  # reopen the log files
    signal.SIGTTIN: "handle_ttin",  # one worker more
    signal.SIGTTOU: "handle_ttou",  # one worker fewer
    signal.SIGCHLD: "handle_chld",  # a worker exited
}
TICK = 0.5  # the loop's longest sleep: heartbeats and deadlines are checked this often
FAST_STOP_TIMEOUT = 5.0  # a worker told to stop fast is SIGKILLed after this
KILL_MARGIN = 2.0  # past worker_shutdown_timeout, before a retiring worker is SIGKILLed


class MasterError(Exception):
    """The master could not start, or had to stop; the message says why."""


class Master:
    def __init__(self, config: Config, config_path: str) -> None:
        self.pid = os.getpid()
        self.current = Generation(1, config)
        self.target = config.workers
        self.workers: dict[int, WorkerProc] = {}
        self.shared = SharedState()  # before any fork: every worker maps the same memory
        self.prober = ProberControl(self.shared)  # active health checks, if any are set
        self.metrics = MetricsControl(self.shared)  # the scrape, if `metrics` is set
        self.listeners = ListenSet(slots=config.workers)
        self.boot = BootGuard()
        self.respawn_at = 0.0  # after a boot failure: no new worker before this
        self.stopping = ""  # "graceful" or "fast" once told to stop
        self.error: str | None = None
        self.pid_file = OwnPidFile(self.pid)  # written at the end of start()
        self.reload = Reloader(self, config_path)
        self.signals = SignalQueue(SIGNAL_HANDLERS)

    # --- start and run ---

    def start(self) -> None:
        """Everything that may fail before the first fork: ConfigError or MasterError."""
        config = self.current.config
        if config.pid_file and (other := other_master(config.pid_file, self.pid)) is not None:
            raise MasterError(
                f"edgeproxy is already running as pid {other} (pid_file {config.pid_file})"
            )
        if (config.user or config.group) and os.geteuid() != 0:
            log.warning("user/group ignored: the master does not run as root")
        prepare_log_files(config)
        self.listeners.open(listen_addresses(config))
        self.shared.peers.assign(config)
        zone_store().prepare(config.limits.values())  # mapped before the fork, as the peers
        try:
            self.metrics.bind(config)
        except OSError as exc:
            raise MasterError(f"cannot listen for metrics on {exc.strerror}") from None
        raise_fd_limit(config)  # inherited by the workers
        if config.pid_file:
            try:
                self.pid_file.write(config.pid_file)
            except OSError as exc:
                raise MasterError(
                    f"cannot write pid_file {config.pid_file}: {exc.strerror or exc}"
                ) from None

    def run(self) -> int:
        """Run the workers until stopped: 0 after QUIT/TERM/INT, else MasterError."""
        self.signals.install()
        log.info(
            "master %d: %d workers on %s (%s)", self.pid, self.target,
            ", ".join(str(a) for a in self.listeners.addresses), build_kind(),
        )  # fmt: skip
        try:
            self.prober.start(self.current.config, self.inherited(), fresh=True)
            self._maintain(time.monotonic())
            self.metrics.prepare(self.current.config)
            self.metrics.start(self.current.config, self.inherited())
            while not (self.stopping and not self.workers):
                self._step()
        finally:
            self.prober.stop()
            self.metrics.close()
            for pid in self.workers:  # only after an unexpected error in the loop itself
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.signals.restore()
            self.close()
        if self.error:
            raise MasterError(self.error)
        log.info("master %d: exiting", self.pid)
        return 0

    def close(self) -> None:
        self.listeners.close_all()
        self.pid_file.remove()

    def inherited(self) -> list[socket.socket]:
        """Every socket the master holds: a child closes those that are not its own."""
        return [*self.listeners.all_sockets(), *self.metrics.sockets()]

    def _step(self) -> None:
        self.signals.wait(TICK)
        while (sig := self.signals.pop()) is not None:
            getattr(self, SIGNAL_HANDLERS[sig])()
        self._reap()
        now = time.monotonic()
        self._check(now)
        self.reload.progress(now)
        if not self.stopping:
            self._maintain(now)
            self.prober.keep(self.current.config, self.inherited(), now)
            self.metrics.keep(self.current.config, self.inherited(), now)
        self.metrics.set_workers(len(self.workers))

    # --- signal handlers (called from the loop, never from a signal handler) ---

    def handle_hup(self) -> None:
        if not self.stopping:
            self.reload.request()

    def handle_quit(self) -> None:
        if self.stopping:
            return
        log.info("graceful shutdown: letting requests in flight finish")
        self.stopping = "graceful"
        self.reload.cancel()
        for worker in self.workers.values():
            self.retire(worker)
        self.listeners.close_all()

    def handle_term(self) -> None:
        self.stop_fast("fast shutdown")

    def handle_int(self) -> None:
        self.stop_fast("fast shutdown (interrupt)")

    def handle_usr1(self) -> None:
        try:
            prepare_log_files(self.current.config)  # created with the workers' owner first
            reopen_error_log()
        except (ConfigError, OSError) as exc:
            log.error("cannot reopen the log files: %s", exc)
        log.info("log files reopened")
        for worker in self.workers.values():
            if worker.ready:
                self._signal(worker, signal.SIGUSR1)

    def handle_ttin(self) -> None:
        if self.stopping:
            return
        if self.target >= MAX_WORKERS:
            log.warning("TTIN: already at the most workers there can be (%d)", MAX_WORKERS)
            return
        self.target += 1
        log.info("TTIN: %d workers", self.target)

    def handle_ttou(self) -> None:
        if self.stopping or self.target <= 1:
            return
        self.target -= 1
        log.info("TTOU: %d workers", self.target)

    def handle_chld(self) -> None:
        self._reap()

    # --- workers ---

    def spawn(self, generation: Generation, slot: int) -> WorkerProc | None:
        row = self.shared.workers.allocate()
        if row is None:
            log.error("cannot start a worker: the shared worker table is full")
            return None
        config = generation.config
        try:
            self.listeners.resize(max(self.listeners.slots, slot + 1))
            sockets = self.listeners.sockets_for(listen_addresses(config), slot)
            self.metrics.prepare(config)  # its series' slots, before the fork
            self.metrics.open_row(row)
            pid = fork_worker(config, sockets, self.shared, row, self.signals.fds, self.inherited())
        except (ConfigError, OSError) as exc:
            log.error("cannot start a worker: %s", exc)
            self.shared.workers.release(row)
            self.respawn_at = time.monotonic() + 1.0
            return None
        worker = WorkerProc(pid, slot, row, generation, time.monotonic())
        self.workers[pid] = worker
        log.debug("worker %d started (generation %d, slot %d)", pid, generation.number, slot)
        return worker

    def retire(self, worker: WorkerProc) -> None:
        """Stop `worker` gracefully (finish in-flight requests), bounded by a SIGKILL."""
        if worker.retiring:
            return
        worker.retiring = True
        now = time.monotonic()
        if worker.ready:
            self._signal(worker, signal.SIGQUIT)
            limit = worker.generation.config.worker_shutdown_timeout + KILL_MARGIN
        else:
            self._signal(worker, signal.SIGTERM)  # nothing in flight yet
            limit = FAST_STOP_TIMEOUT
        worker.kill_at = now + limit

    def stop_fast(self, why: str) -> None:
        if self.stopping != "fast":
            log.info("%s", why)
        self.stopping = "fast"
        self.reload.cancel()
        deadline = time.monotonic() + FAST_STOP_TIMEOUT
        for worker in self.workers.values():
            worker.retiring = True
            self._signal(worker, signal.SIGTERM)
            if worker.kill_at is None or worker.kill_at > deadline:
                worker.kill_at = deadline
        self.listeners.close_all()

    def fail(self, message: str) -> None:
        """Give up: stop every worker and make run() raise MasterError(message)."""
        log.error("%s", message)
        self.error = message
        self.stop_fast("stopping")

    def live_configs(self) -> list[Config]:
        configs = [w.generation.config for w in self.workers.values()]
        configs.append(self.current.config)
        if (starting := self.reload.config()) is not None:
            configs.append(starting)
        return configs

    def switch_to(self, generation: Generation) -> int:
        """Serve with `generation` (its reload succeeded): retire the older workers, close
        the addresses it no longer lists, follow its error log and pid file. Returns the
        number of workers now retiring."""
        old, new = self.current.config, generation.config
        self.current = generation
        self.target = new.workers  # as nginx: a reload resets TTIN/TTOU to `workers`
        retiring = 0
        for worker in self.workers.values():
            if worker.generation is not generation and not worker.retiring:
                self.retire(worker)
                retiring += 1
        keep = set(listen_addresses(new))
        self.listeners.close([a for a in self.listeners.addresses if a not in keep])
        if new.error_log != old.error_log:
            setup_error_log(new.error_log)
        self.pid_file.move(new.pid_file)
        self.prober.replace(new, self.inherited())  # never two at once
        self.metrics.reloaded()
        self.metrics.replace(new, self.inherited())  # the new config's series
        return retiring

    def reload_failed(self) -> None:
        self.metrics.reload_failed()

    def _signal(self, worker: WorkerProc, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.prober.exited(pid, describe_status(status)):
                continue
            if self.metrics.exited(pid, describe_status(status)):
                continue
            worker = self.workers.pop(pid, None)
            if worker is not None:
                # What it counted is kept, however it died; a worker not told to stop
                # is one more restart.
                self.metrics.worker_gone(worker.row, not (worker.retiring or self.stopping))
                self.shared.workers.release(worker.row)
                zone_store().reclaim(pid)  # the connection slots it held, however it died
                self._exited(worker, describe_status(status))

    def _exited(self, worker: WorkerProc, how: str) -> None:
        if worker.retiring or self.stopping:
            log.info("worker %d stopped (%s)", worker.pid, how)
            self.shared.peers.retain(self.live_configs())  # a generation may be gone now
            self.metrics.retain(self.live_configs())
            return
        if self.reload.starting(worker):
            if not worker.ready:
                self.reload.abort(f"a new worker failed to start ({how})")
                return
        elif not worker.ready:
            delay = self.boot.failed()
            if delay is None:
                self.fail(
                    f"workers keep failing to start ({self.boot.failures} in a row, the last "
                    f"{how}); stopping: the worker errors above say why"
                )
                return
            log.error("worker %d failed to start (%s); trying again in %gs", worker.pid, how,
                      delay)  # fmt: skip
            self.respawn_at = time.monotonic() + delay
            return
        if not worker.killed:
            log.error("worker %d died (%s); starting a new one", worker.pid, how)

    def _check(self, now: float) -> None:
        """Readiness, heartbeats and SIGKILL deadlines."""
        table = self.shared.workers
        for worker in self.workers.values():
            if not worker.ready and table.ready(worker.row):
                worker.ready = True
                log.info("worker %d ready (generation %d, slot %d)", worker.pid,
                         worker.generation.number, worker.slot)  # fmt: skip
                if not self.reload.starting(worker):
                    self.boot.booted()
            if worker.killed:
                continue
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("worker %d did not stop in time; killing it", worker.pid)
            else:
                last = table.heartbeat(worker.row) or worker.started
                silent = now - last
                if silent <= worker.generation.config.worker_heartbeat_timeout:
                    continue
                what = "its event loop is blocked" if worker.ready else "it did not start"
                log.error("worker %d: no heartbeat for %.1fs (%s); killing it", worker.pid,
                          silent, what)  # fmt: skip
            worker.killed = True
            self._signal(worker, signal.SIGKILL)

    def _maintain(self, now: float) -> None:
        """Retire workers above the wanted number, start the missing ones."""
        generation = self.current
        serving = [
            w for w in self.workers.values() if w.generation is generation and not w.retiring
        ]
        for worker in serving:
            if worker.slot >= self.target:
                self.retire(worker)  # TTOU: the highest slots go
        in_use = [w.slot + 1 for w in self.workers.values() if not w.retiring]
        slots = max([self.target, *in_use])
        if slots < self.listeners.slots:
            self.listeners.resize(slots)
        if now < self.respawn_at:
            return
        taken = {w.slot for w in serving}
        for slot in range(self.target):
            if slot not in taken and self.spawn(generation, slot) is None:
                return

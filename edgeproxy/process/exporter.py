"""The metrics exporter: the master's handle on the shared counters, and the process that
serves the scrape.

The master owns the counters' memory (edgeproxy.metrics.store) and the scrape's listening
socket, and it lives across reloads; but it never serves anything, so that it always
answers signals at once. The scrape is served by one child process, forked like the health
prober (edgeproxy.process.prober): it reads the rows every worker writes, sums them and
answers. A reload replaces it (with the new config's series), one that dies is started
again, and the master kills it when it exits. The socket stays the master's, so a scrape
arriving while the exporter is replaced waits in the backlog rather than being refused;
one the old exporter had already taken is answered by it (SIGTERM: it stops accepting,
answers what it holds, and exits; SIGKILL after RETIRE_GRACE if it has not).
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

from edgeproxy import __version__, build_kind
from edgeproxy.config.model import Address, Config
from edgeproxy.http.codec import AUTO_ORDER, CODECS
from edgeproxy.metrics.endpoint import READ_TIMEOUT, Endpoint
from edgeproxy.metrics.exposition import HealthOf, Instance, render
from edgeproxy.metrics.store import (
    LOADED_AT,
    RELOAD_FAILURES,
    RELOAD_OK,
    RELOADS,
    RESTARTS,
    WORKERS,
    MetricsStore,
)
from edgeproxy.process.helper_process import HelperProcess, kill_and_reap
from edgeproxy.process.shared import SharedState
from edgeproxy.process.workers import CHILD_DEFAULTS, CHILD_IGNORES, drop_privileges
from edgeproxy.upstream.peer import FAILED_UNTIL, PROBED_DOWN

log = logging.getLogger("edgeproxy.master")

ORPHAN_CHECK = 1.0  # how often the exporter looks whether its master is still there
SNAPSHOT_TRIES = 100  # reads of the rows while the master folds one, before taking any
# A replaced exporter's time to answer the scrapes it took (a head may take READ_TIMEOUT).
RETIRE_GRACE = READ_TIMEOUT + 1.0


def codec_name(config: Config) -> str:
    if config.http_parser != "auto":
        return config.http_parser
    return next((name for name in AUTO_ORDER if name in CODECS), "h11")


def bind_metrics(address: Address) -> socket.socket:
    """The scrape's listening socket; an OSError that names `address` if it cannot be."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{address}: {exc.strerror or exc}") from None
    return sock


class MetricsControl(HelperProcess):
    """The counters' memory, the scrape's socket, and the exporter process."""

    what = "metrics exporter"

    def __init__(self, shared: SharedState) -> None:
        super().__init__()
        self.shared = shared
        self.store: MetricsStore | None = None  # mapped once a config asks for metrics
        self.sock: socket.socket | None = None
        self.address: Address | None = None
        # The last reload's outcome, kept here too: the store is mapped only once a config
        # asks for metrics, which may be a reload's (the start's config loaded fine).
        self.last_reload_ok = True
        self.loaded_at = time.time()
        self.retiring: dict[int, float] = {}  # replaced exporters: pid -> when to SIGKILL

    # --- the counters ---

    def prepare(self, config: Config) -> None:
        """Before `config`'s workers are forked: slots for its series (known ones kept)."""
        if config.metrics is None:
            return
        if self.store is None:
            self.store = self.shared.metrics = MetricsStore()
            self._write_reload_state()
        self.store.registry.assign(config)

    def open_row(self, row: int) -> None:
        if self.store is not None:
            self.store.open_row(row)

    def worker_gone(self, row: int, restarted: bool) -> None:
        """A worker was reaped: keep what it counted; `restarted`: it died unasked."""
        if self.store is not None:
            self.store.fold(row)
            if restarted:
                self.store.add(RESTARTS)

    def retain(self, configs: Iterable[Config]) -> None:
        if self.store is not None:
            self.store.clear_blocks(self.store.registry.retain(configs))

    def reloaded(self) -> None:
        self.last_reload_ok, self.loaded_at = True, time.time()
        if self.store is not None:
            self.store.add(RELOADS)
        self._write_reload_state()

    def reload_failed(self) -> None:
        """A reload was refused: the previous config keeps serving."""
        self.last_reload_ok = False
        if self.store is not None:
            self.store.add(RELOAD_FAILURES)
        self._write_reload_state()

    def _write_reload_state(self) -> None:
        if self.store is not None:
            self.store.set(RELOAD_OK, 1.0 if self.last_reload_ok else 0.0)
            self.store.set(LOADED_AT, self.loaded_at)

    def set_workers(self, count: int) -> None:
        if self.store is not None:
            self.store.set(WORKERS, count)

    # --- the socket ---

    def sockets(self) -> list[socket.socket]:
        return [] if self.sock is None else [self.sock]

    def bind(self, config: Config) -> None:
        """Listen where `config` says (OSError if that cannot be); the old address is
        closed once the new one is bound."""
        wanted = config.metrics.listen if config.metrics is not None else None
        if wanted == self.address:
            return
        sock = bind_metrics(wanted) if wanted is not None else None
        if self.sock is not None:
            self.sock.close()
        self.sock, self.address = sock, wanted

    # --- the exporter process ---

    def start(self, config: Config, inherited: Iterable[socket.socket]) -> None:
        if self.pid is not None or config.metrics is None or self.sock is None:
            return
        assert self.store is not None
        try:
            self.pid = _fork(config, self.shared, self.store, self.sock, inherited)
        except OSError as exc:
            self.fork_failed(exc)
            return
        log.info("metrics exporter %d serving http://%s%s", self.pid, self.address,
                 config.metrics.path)  # fmt: skip

    def replace(self, config: Config, inherited: Iterable[socket.socket]) -> None:
        """A reload: the new config's series, address and path."""
        self._retire()
        try:
            self.bind(config)
        except OSError as exc:
            log.error("cannot listen for metrics on %s; not serving them", exc.strerror)
            return
        self.start(config, inherited)

    def close(self) -> None:
        self.stop()
        for pid in self.retiring:
            kill_and_reap(pid)
        self.retiring.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = self.address = None

    def keep(self, config: Config, inherited: Iterable[socket.socket], now: float) -> None:
        for pid, deadline in list(self.retiring.items()):
            if now >= deadline:  # (reaped by the master's loop, as any child)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.retiring[pid] = float("inf")
        if self.due(now):
            self.start(config, inherited)

    def exited(self, pid: int, how: str) -> bool:
        if self.retiring.pop(pid, None) is not None:
            return True  # replaced, and done with the scrapes it had taken
        return super().exited(pid, how)

    def _retire(self) -> None:
        """Let the exporter answer the scrapes it has taken, then go (see the module)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return  # died just now: the loop reaps it
        self.retiring[pid] = time.monotonic() + RETIRE_GRACE


def _fork(
    config: Config,
    shared: SharedState,
    store: MetricsStore,
    sock: socket.socket,
    inherited: Iterable[socket.socket],
) -> int:
    master_pid = os.getpid()
    instance = (__version__, build_kind(), codec_name(config))  # before the fork: imports
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in CHILD_IGNORES:
            signal.signal(sig, signal.SIG_IGN)
        for sig in CHILD_DEFAULTS:
            signal.signal(sig, signal.SIG_DFL)
        for other in inherited:
            if other is not sock:
                other.close()  # a public socket must not outlive its closing in the master
        drop_privileges(config)
        asyncio.run(_serve(config, shared, store, sock, instance, master_pid))
        code = 0
    except BaseException:
        log.exception("metrics exporter crashed")
    finally:
        os._exit(code)  # never return into the master's loop


def _health(config: Config, shared: SharedState) -> HealthOf:
    views = {
        (upstream.name, str(peer.address)): shared.peers.view(upstream.name, peer.address)
        for upstream in config.upstreams.values()
        for peer in upstream.servers
    }
    down = {
        (upstream.name, str(peer.address))
        for upstream in config.upstreams.values()
        for peer in upstream.servers
        if peer.down
    }

    def health(upstream: str, peer: str) -> bool | None:
        view = views.get((upstream, peer))
        if view is None:
            return None
        if (upstream, peer) in down:
            return False
        return time.monotonic() >= view[FAILED_UNTIL] and not view[PROBED_DOWN]

    return health


async def _serve(
    config: Config,
    shared: SharedState,
    store: MetricsStore,
    sock: socket.socket,
    build: tuple[str, str, str],
    master_pid: int,
) -> None:
    assert config.metrics is not None
    health = _health(config, shared)

    async def scrape() -> str:
        values = None
        for _ in range(SNAPSHOT_TRIES):
            values = store.snapshot()
            if values is not None:
                break
            await asyncio.sleep(0.001)  # the master is folding a row: a moment
        if values is None:
            values = store.snapshot(consistent=False)
        assert values is not None
        instance = Instance(
            store.header(WORKERS),
            store.header(RELOADS),
            store.header(RESTARTS),
            store.header(RELOAD_FAILURES),
            store.header(RELOAD_OK),
            store.header(LOADED_AT),
            *build,
        )
        return render(config, store.registry, values, health, instance)

    retired = asyncio.Event()  # SIGTERM: the master has started another exporter
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, retired.set)
    server = await Endpoint(config.metrics.path, scrape).serve(sock)
    async with server:
        while os.getppid() == master_pid and not retired.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(retired.wait(), ORPHAN_CHECK)
        server.close()  # accept no more (the socket is the master's: others wait for the next)
        # The scrapes taken: each connection's task was made when it was accepted.
        taken = asyncio.all_tasks() - {asyncio.current_task()}
        if taken:
            await asyncio.wait(taken, timeout=READ_TIMEOUT)

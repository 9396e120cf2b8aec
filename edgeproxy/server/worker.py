"""A worker: serves already-bound sockets with one event loop until told to stop.

`Worker` is what tests start in-process; `run_worker` is the process entry point of each
worker the master forks (edgeproxy.process), with uvloop, signal handling and, through
`WorkerHooks`, the master's heartbeat and shared state.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Protocol

import uvloop

from edgeproxy.config.model import Address, Config, ServerConfig
from edgeproxy.http.codec import resolve_codec
from edgeproxy.logging import AccessLog, reopen_error_log
from edgeproxy.metrics.binding import WorkerMetrics
from edgeproxy.server.accept_gate import AcceptGate
from edgeproxy.server.connection import BODY, CLOSED, HEADER, IDLE, DownstreamConnection
from edgeproxy.server.proxy_protocol_front import proxy_protocol_factory
from edgeproxy.server.router import Router
from edgeproxy.server.routes import RouteBuilder
from edgeproxy.server.services import ServedConnection, WorkerServices
from edgeproxy.server.tls import tls_contexts
from edgeproxy.server.tls_front import tls_factory
from edgeproxy.upstream.peer import HealthLookup
from edgeproxy.upstream.pool import UpstreamPool
from edgeproxy.upstream.slots import PeerSlots, SlotLookup

log = logging.getLogger("edgeproxy.worker")

GRACEFUL_TIMEOUT = 30.0  # seconds in-flight requests get on a graceful stop (nginx-like)
# On a graceful stop, keep-alive connections get this long to send one more request (answered
# with `Connection: close`) before idle ones are closed: a busy client's next request is
# then answered instead of racing our close, which a client cannot tell from a failure.
IDLE_GRACE = 1.0


def build_routers(config: Config, routes: RouteBuilder) -> dict[Address, Router]:
    by_address: dict[Address, list[ServerConfig]] = {}
    for server in config.servers:
        for address in server.listen:
            by_address.setdefault(address, []).append(server)
    return {
        address: Router(servers, routes, routes.connection_phases(servers))
        for address, servers in by_address.items()
    }


class WorkerHooks(Protocol):
    """What the master gives a worker it forked (edgeproxy.process.workers)."""

    heartbeat_interval: float

    def peer_health(self, upstream: str, address: Address) -> memoryview[float] | None: ...

    def peer_slots(self, upstream: str, address: Address) -> PeerSlots | None: ...

    def metrics(self, config: Config) -> WorkerMetrics | None:
        """This worker's counters, where `config` asks for metrics."""

    def ready(self) -> None:
        """Serving: the master may now retire the workers this one replaces."""

    def beat(self) -> bool:
        """The loop is alive; False when the master is gone and the worker should stop."""


class Worker:
    def __init__(
        self,
        config: Config,
        peer_health: HealthLookup | None = None,
        peer_slots: SlotLookup | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.codec = resolve_codec(config.http_parser)
        self.pools = {
            name: UpstreamPool(up, self.codec, peer_health, peer_slots)
            for name, up in config.upstreams.items()
        }
        self.access_log = AccessLog(config.access_log)
        self.metrics = metrics
        if metrics is not None:
            for pool in self.pools.values():
                for peer in pool.peers:
                    peer.stats = metrics.peer(pool.name, peer.name)
        self.services = WorkerServices(
            config, self.loop, self.codec, self.pools, self.access_log, metrics
        )
        self.routers = build_routers(config, RouteBuilder(self.services))
        self.gate = AcceptGate(self.loop, self.services.connections, config.worker_connections)
        # Built by the master before it forked this worker (each config's own: a reload's
        # workers serve the certificates read afresh), else here.
        self.tls = tls_contexts(config)

    @property
    def connections(self) -> set[ServedConnection]:
        return self.services.connections

    async def start(self, sockets: Mapping[Address, socket.socket]) -> None:
        proxied = {a for server in self.config.servers for a in server.proxy_protocol}
        for address, sock in sockets.items():  # the gate owns `sock` and closes it
            router = self.routers[address]

            def connection(router: Router = router) -> DownstreamConnection:
                return DownstreamConnection(self.services, router)

            factory: Callable[[], asyncio.Protocol] = connection
            if address in self.tls:
                tls = self.tls[address]
                factory = tls_factory(connection, router, tls, self.loop, self.connections)
            if address in proxied:  # the PROXY header comes first, before any TLS
                factory = proxy_protocol_factory(factory, router, self.loop)
            await self.gate.listen(sock, factory, address.kind == "unix")

    async def stop(self, timeout: float = GRACEFUL_TIMEOUT) -> None:
        """Stop accepting, let requests in flight finish (up to `timeout`), then close all.

        Requests that arrive meanwhile on open connections are still answered, with
        `Connection: close`; idle keep-alive connections are closed after IDLE_GRACE.
        """
        self.services.stopping = True
        self.gate.close()
        now = self.loop.time()
        deadline = now + timeout
        grace_end = now + min(IDLE_GRACE, timeout)
        while self.connections and now < deadline:
            if now >= grace_end:
                for conn in list(self.connections):
                    conn.close_if_idle()
            await asyncio.sleep(0.05)  # polling a shrinking set; bounded by the deadline
            now = self.loop.time()
        for conn in list(self.connections):
            conn.abort()
        # One loop turn: the aborted connections' connection_lost runs, and logs their
        # requests (499), before the access log closes.
        await asyncio.sleep(0)
        for pool in self.pools.values():
            pool.close()
        self.access_log.close()

    def publish_gauges(self) -> None:
        """The gauges of the metrics, now and then (each heartbeat) rather than per request:
        client connections by state, requests in flight per peer, queue lengths."""
        metrics = self.metrics
        if metrics is None:
            return
        reading = writing = idle = 0
        for conn in self.connections:
            if not isinstance(conn, DownstreamConnection):
                reading += 1  # a TLS handshake, or a PROXY header, on its way
                continue
            state = conn.state
            if state == IDLE or (state == HEADER and conn.reader.idle):
                idle += 1
            elif state in (HEADER, BODY):
                reading += 1
            elif state != CLOSED:
                writing += 1  # BUSY, LINGER, or a tunnel (HANDED_OVER)
        metrics.set_connections(reading + writing + idle, reading, writing, idle)
        for pool in self.pools.values():
            metrics.set_queue(pool.name, len(pool.queue))
            for peer in pool.peers:
                if peer.stats is not None:
                    metrics.set_in_flight(peer.stats, peer.active)

    def reopen_logs(self) -> None:
        try:
            self.access_log.reopen()
            reopen_error_log()
        except OSError as exc:
            log.error("cannot reopen a log file: %s", exc)
            return
        log.info("log files reopened")


async def serve(
    config: Config, sockets: Mapping[Address, socket.socket], hooks: WorkerHooks | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (fast stop) or SIGQUIT (graceful stop); USR1 reopens logs."""
    loop = asyncio.get_running_loop()
    if hooks is None:
        worker = Worker(config)
    else:
        worker = Worker(config, hooks.peer_health, hooks.peer_slots, hooks.metrics(config))
    await worker.start(sockets)
    stop: asyncio.Future[float] = loop.create_future()

    def request_stop(timeout: float) -> None:
        if not stop.done():
            stop.set_result(timeout)

    loop.add_signal_handler(signal.SIGTERM, request_stop, 0.0)
    loop.add_signal_handler(signal.SIGINT, request_stop, 0.0)
    loop.add_signal_handler(signal.SIGQUIT, request_stop, config.worker_shutdown_timeout)
    loop.add_signal_handler(signal.SIGUSR1, worker.reopen_logs)
    heartbeat: asyncio.TimerHandle | None = None
    if hooks is not None:

        def beat() -> None:
            nonlocal heartbeat
            if not hooks.beat():
                log.warning("the master is gone; stopping")
                request_stop(config.worker_shutdown_timeout)
            worker.publish_gauges()
            heartbeat = loop.call_later(hooks.heartbeat_interval, beat)

        beat()
        hooks.ready()
    log.debug("serving on %s", ", ".join(str(a) for a in sockets))
    timeout = await stop
    await worker.stop(timeout)
    if heartbeat is not None:
        heartbeat.cancel()


def run_worker(
    config: Config, sockets: Mapping[Address, socket.socket], hooks: WorkerHooks | None = None
) -> None:
    uvloop.run(serve(config, sockets, hooks))  # a fresh loop, in the process that serves

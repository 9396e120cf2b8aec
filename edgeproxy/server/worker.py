"""A worker: serves already-bound sockets with one event loop until told to stop.

`Worker` is what tests start in-process; `run_worker` is the process entry point (the CLI
today, the master's forked children later), with uvloop and signal handling.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Mapping

from edgeproxy.config.model import Address, Config, ServerConfig
from edgeproxy.http.codec import resolve_codec
from edgeproxy.logging import AccessLog
from edgeproxy.server.connection import DownstreamConnection
from edgeproxy.server.proxy import ProxyHandler
from edgeproxy.server.router import Router
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.worker")

GRACEFUL_TIMEOUT = 30.0  # seconds in-flight requests get on a graceful stop (nginx-like)


def build_routers(config: Config) -> dict[Address, Router]:
    by_address: dict[Address, list[ServerConfig]] = {}
    for server in config.servers:
        for address in server.listen:
            by_address.setdefault(address, []).append(server)
    return {address: Router(servers) for address, servers in by_address.items()}


class Worker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.codec = resolve_codec(config.http_parser)
        self.pools = {name: UpstreamPool(up, self.codec) for name, up in config.upstreams.items()}
        self.proxy = ProxyHandler(self.pools, config.temp_path)
        self.access_log = AccessLog(config.access_log)
        self.routers = build_routers(config)
        self.connections: set[DownstreamConnection] = set()
        self.stopping = False
        self._servers: list[asyncio.Server] = []

    async def start(self, sockets: Mapping[Address, socket.socket]) -> None:
        for address, sock in sockets.items():
            router = self.routers[address]

            def factory(router: Router = router) -> DownstreamConnection:
                return DownstreamConnection(self, router)

            if address.kind == "unix":
                server = await self.loop.create_unix_server(factory, sock=sock)
            else:
                server = await self.loop.create_server(factory, sock=sock)
            self._servers.append(server)

    async def stop(self, timeout: float = GRACEFUL_TIMEOUT) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout`), then close all."""
        self.stopping = True
        for server in self._servers:
            server.close()
        deadline = self.loop.time() + timeout
        while self.connections:
            for conn in list(self.connections):
                conn.close_if_idle()
            if not any(c.exchange for c in self.connections) or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)  # polling a shrinking set; bounded by the deadline
        for conn in list(self.connections):
            conn.transport.abort()
        for pool in self.pools.values():
            pool.close()
        self.access_log.close()


async def serve(config: Config, sockets: Mapping[Address, socket.socket]) -> None:
    """Serve until SIGTERM/SIGINT (fast stop) or SIGQUIT (graceful stop)."""
    loop = asyncio.get_running_loop()
    worker = Worker(config)
    await worker.start(sockets)
    stop: asyncio.Future[float] = loop.create_future()

    def request_stop(timeout: float) -> None:
        if not stop.done():
            stop.set_result(timeout)

    loop.add_signal_handler(signal.SIGTERM, request_stop, 0.0)
    loop.add_signal_handler(signal.SIGINT, request_stop, 0.0)
    loop.add_signal_handler(signal.SIGQUIT, request_stop, GRACEFUL_TIMEOUT)
    log.info("edgeproxy serving on %s", ", ".join(str(a) for a in sockets))
    timeout = await stop
    await worker.stop(timeout)


def run_worker(config: Config, sockets: Mapping[Address, socket.socket]) -> None:
    import uvloop

    uvloop.run(serve(config, sockets))

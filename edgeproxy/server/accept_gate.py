"""A worker's listening sockets, and `worker_connections`: past that many open client
connections the worker stops accepting until one ends, as nginx does, instead of running
out of file descriptors. Connections the kernel gives this worker's socket (each worker
has its own SO_REUSEPORT socket) wait meanwhile in its listen queue.

The event loop cannot pause a server, only close it, and closing it closes its socket.
So each server gets a duplicate of the listening socket: closing the server leaves the
original listening (its queue keeps filling), and a new server on a new duplicate resumes.
While paused, the count is looked at every POLL seconds (the connections do not call
back when they end). Connections the loop accepts in the same batch as the one that
reached the limit are served too: the limit may be passed by those already queued.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sized

log = logging.getLogger("edgeproxy.worker")

POLL = 0.05  # seconds between looks at the count while paused

Factory = Callable[[], asyncio.BaseProtocol]


class AcceptGate:
    def __init__(self, loop: asyncio.AbstractEventLoop, connections: Sized, limit: int) -> None:
        self.loop = loop
        self.connections = connections  # the worker's open client connections
        self.limit = limit
        self.listeners: list[tuple[socket.socket, Factory, bool]] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.paused = False
        self.closed = False
        self._poll: asyncio.TimerHandle | None = None
        self._resuming: asyncio.Task[None] | None = None

    async def listen(self, sock: socket.socket, factory: Factory, unix: bool) -> None:
        """Serve `sock` (the gate owns it and closes it) with connections from `factory`."""
        entry = (sock, self._counted(factory), unix)
        self.listeners.append(entry)
        self.servers.append(await self._serve(entry))

    def _counted(self, factory: Factory) -> Factory:
        def accepted() -> asyncio.BaseProtocol:
            # The connection being made is not counted yet: it adds itself once made.
            if not self.paused and len(self.connections) + 1 >= self.limit:
                # Not from within the server's own callback (the connection being made is
                # attached to the server after this returns): right after it.
                self.paused = True
                self.loop.call_soon(self._pause)
            return factory()

        return accepted

    async def _serve(self, entry: tuple[socket.socket, Factory, bool]) -> asyncio.AbstractServer:
        sock, factory, unix = entry
        duplicate = sock.dup()
        try:
            if unix:
                return await self.loop.create_unix_server(factory, sock=duplicate)
            return await self.loop.create_server(factory, sock=duplicate)
        except BaseException:
            duplicate.close()
            raise

    def _pause(self) -> None:
        if self.closed:
            return
        log.warning("worker_connections (%d) reached: not accepting until connections end",
                    self.limit)  # fmt: skip
        for server in self.servers:
            server.close()
        self.servers = []
        self._poll = self.loop.call_later(POLL, self._check)

    def _check(self) -> None:
        self._poll = None
        if self.closed:
            return
        if len(self.connections) < self.limit:
            self._resuming = self.loop.create_task(self._resume())
        else:
            self._poll = self.loop.call_later(POLL, self._check)

    async def _resume(self) -> None:
        servers = []
        try:
            for entry in self.listeners:
                servers.append(await self._serve(entry))
        except OSError as exc:  # out of descriptors for the duplicate: try again soon
            log.error("cannot resume accepting: %s", exc)
            for server in servers:
                server.close()
            if not self.closed:
                self._poll = self.loop.call_later(POLL, self._check)
            return
        if self.closed:
            for server in servers:
                server.close()
            return
        self.servers = servers
        self.paused = False
        log.info("accepting connections again")

    def close(self) -> None:
        """Stop accepting for good and close the listening sockets."""
        self.closed = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for server in self.servers:
            server.close()
        self.servers = []
        for sock, _, _ in self.listeners:
            sock.close()

"""An upstream pool: its peers, the balancer that picks among them, the protocol it speaks
to them, and keep-alive reuse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Container
from typing import TYPE_CHECKING, Final, Protocol

from edgeproxy.config.model import UpstreamConfig
from edgeproxy.errors import UpstreamError
from edgeproxy.http.codec import HeadCodec
from edgeproxy.upstream.balancers import make_balancer
from edgeproxy.upstream.connect import ConnectionWaiter, PendingConnect
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import HealthLookup, Peer
from edgeproxy.upstream.protocols import make_protocol
from edgeproxy.upstream.slots import SlotLookup
from edgeproxy.upstream.streams import poller_for

if TYPE_CHECKING:
    from edgeproxy.upstream._stream import Poller

log = logging.getLogger("edgeproxy.upstream")

SWEEP_INTERVAL: Final = (
    1.0  # how often idle keep-alive connections past keepalive_timeout are closed
)
# Idle connections above `keepalive` (left by a burst that needed more at once) are closed
# only once they stay unused this long: the next burst, usually a moment away, reuses them
# instead of paying a connect each (HAProxy's pool-purge-delay, in short).
SURPLUS_GRACE: Final = 1.0
# ... but never more than this many times `keepalive` idle at once, whatever the burst.
SURPLUS_FACTOR: Final = 8
# How often queued requests look for a place freed by another worker (this worker's own
# releases wake them at once).
QUEUE_POLL: Final = 0.02


class QueueWaiter(Protocol):
    """A request waiting in the pool's queue for a max_conns place (an exchange)."""

    @property
    def key(self) -> str:
        """Its balancing key (the client IP, for ip_hash)."""
        ...

    def take_peer(self, peer: Peer) -> None:
        """Leave the queue for `peer` (its slot taken, as from `select`)."""


class _Either:
    """`peer in a or peer in b`, without building their union."""

    __slots__ = ("first", "second")

    def __init__(self, first: Container[Peer], second: Container[Peer]) -> None:
        self.first = first
        self.second = second

    def __contains__(self, peer: object) -> bool:
        return peer in self.first or peer in self.second


class UpstreamPool:
    def __init__(
        self,
        config: UpstreamConfig,
        codec: HeadCodec,
        health: HealthLookup | None = None,
        slots: SlotLookup | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.keepalive = config.keepalive > 0  # (config objects are slow to read per request)
        self.protocol = make_protocol(config.protocol, codec)
        peers = [
            Peer(
                server,
                index,
                health(config.name, server.address) if health else None,
                slots(config.name, server.address) if slots and server.max_conns else None,
            )
            for index, server in enumerate(config.servers)
        ]
        # Whether a peer counts max_conns for the whole instance (select takes its slot).
        self._shared_caps = any(peer.slots is not None for peer in peers)
        self.peers = peers
        # Per peer (by Peer.index): idle keep-alive connections, newest last; and the
        # requests connecting to it, to which a connection released meanwhile goes rather
        # than to the idle list (or, with that full, to a close).
        self._idle: list[deque[UpstreamConnection]] = [deque() for _ in peers]
        self._waiters: list[deque[ConnectionWaiter]] = [deque() for _ in peers]
        # Peers marked `down` stay in the balancers' lists, so ip_hash maps every other
        # client key as before, but never among the candidates they are offered.
        self.primary = [p for p in peers if not p.backup and not p.down]
        self.backup = [p for p in peers if p.backup and not p.down]
        self.balancer = make_balancer(config.balance, [p for p in peers if not p.backup])
        backups = [p for p in peers if p.backup]
        self.backup_balancer = make_balancer(config.balance, backups) if backups else None
        self.live = self.primary + self.backup
        # nginx ignores max_fails for a lone server: there is nowhere else to go.
        self._lone = len(peers) == 1
        # Whether active health checks run for this pool: only then is PROBED_DOWN read.
        self._probed = config.health_check is not None
        self.loop = asyncio.get_running_loop()  # pools are built by a worker, in its loop
        self._poller: Poller | None = None  # the loop's, once a connect needs it
        self.idle_count = 0
        self._idle_cap = config.keepalive * SURPLUS_FACTOR
        self._sweeper: asyncio.TimerHandle | None = None
        # Requests waiting for a max_conns place, first come first served (this worker's).
        self.queue: deque[QueueWaiter] = deque()
        self._queue_poll: asyncio.TimerHandle | None = None
        self._queue_wake: asyncio.Handle | None = None

    # --- choosing a peer ---

    def select(self, tried: Container[Peer], key: str) -> Peer | None:
        """A peer for the next attempt, or None when no live peer is left.

        A peer whose max_conns is counted for the whole instance is taken only with one of
        its slots: the caller gives it back with `release_slot` once done with the peer.
        """
        peer = self._select(tried, key)
        if peer is None or not self._shared_caps:
            return peer
        full: set[Peer] = set()
        while peer is not None:
            slots = peer.slots
            if slots is None or slots.acquire(peer.max_conns):
                return peer
            full.add(peer)  # at its cap in other workers: the balancer proposes another
            peer = self._select(_Either(tried, full), key)
        return None

    def release_slot(self, peer: Peer) -> None:
        """The request that `select` gave `peer` to is done with it."""
        if peer.slots is not None:
            peer.slots.release()
        if self.queue:
            self._wake_queue()

    # --- the queue: requests that found every server at its max_conns ---

    def only_full(self, tried: Container[Peer]) -> bool:
        """Whether a peer outside `tried` would be selected but for its max_conns: a
        request may wait for it (never for a failed or down one)."""
        if self.config.queue is None:
            return False
        now = time.monotonic()
        probes = self._probed and self._probes_count()
        return any(
            peer.max_conns
            and peer not in tried
            and (self._lone or (now >= peer.failed_until and not (probes and peer.probed_down)))
            for peer in self.live
        )

    def enqueue(self, waiter: QueueWaiter) -> bool:
        """Put `waiter` at the back of the queue; False when the queue is full."""
        queue = self.config.queue
        if queue is None or len(self.queue) >= queue.size:
            return False
        self.queue.append(waiter)
        if self._queue_poll is None:
            self._queue_poll = self.loop.call_later(QUEUE_POLL, self._poll_queue)
        return True

    def leave_queue(self, waiter: QueueWaiter) -> None:
        try:
            self.queue.remove(waiter)
        except ValueError:
            return  # served already

    def _wake_queue(self) -> None:
        # Soon, not now: a release happens inside another request's callbacks.
        if self._queue_wake is None:
            self._queue_wake = self.loop.call_soon(self._serve_queue)

    def _poll_queue(self) -> None:
        # Places freed by other workers are not announced: look again now and then.
        self._queue_poll = None
        self._serve_queue()
        if self.queue:
            self._queue_poll = self.loop.call_later(QUEUE_POLL, self._poll_queue)

    def _serve_queue(self) -> None:
        self._queue_wake = None
        queue = self.queue
        while queue:
            peer = self.select((), queue[0].key)
            if peer is None:
                return
            queue.popleft().take_peer(peer)

    def _select(self, tried: Container[Peer], key: str) -> Peer | None:
        if self._lone and not tried:
            # One server: no choice to make (and, as nginx, no failure state to consult).
            if not self.live:
                return None  # marked down
            peer = self.live[0]
            return peer if not peer.max_conns or peer.active < peer.max_conns else None
        now = time.monotonic()
        probes = self._probed and self._probes_count()
        candidates = [p for p in self.primary if p not in tried and self._usable(p, now, probes)]
        if candidates:
            return self.balancer.select(candidates, key)
        if self.backup:
            assert self.backup_balancer is not None
            candidates = [p for p in self.backup if p not in tried and self._usable(p, now, probes)]
            if candidates:
                return self.backup_balancer.select(candidates, key)
        return None

    def has_candidate(self, tried: Container[Peer]) -> bool:
        """Whether `select` would find a peer outside `tried` (balancer state untouched)."""
        now = time.monotonic()
        probes = self._probed and self._probes_count()
        return any(p not in tried and self._usable(p, now, probes) for p in self.live)

    def _probes_count(self) -> bool:
        """Whether a failed health check leaves a peer out, in a pool with checks (callers
        test `_probed` first: a pool without them pays one attribute read): only while one
        of its servers passes them. With every server failing its checks,
        they are all tried anyway, as nginx does (the prober logs that once)."""
        return not all(peer.probed_down for peer in self.live)

    def _usable(self, peer: Peer, now: float, probes: bool) -> bool:
        if self._lone:
            return not peer.max_conns or peer.active < peer.max_conns
        if probes and peer.probed_down:
            return False
        return peer.available(now)

    def record_failure(self, peer: Peer, error: UpstreamError) -> None:
        if peer.record_failure(time.monotonic()) and not self._lone:
            log.warning(
                "upstream %s: peer %s marked unavailable for %gs after %s",
                self.name,
                peer.name,
                peer.fail_timeout,
                error,
            )

    # --- connections ---

    def acquire_idle(self, peer: Peer) -> UpstreamConnection | None:
        """An idle keep-alive connection to `peer` that is fresh enough, or None.

        A connection handed out counts as a request in flight on the peer until `release`.
        """
        conn = self._take_idle(peer)
        if conn is not None:
            peer.active += 1
        return conn

    def connect(self, peer: Peer, waiter: ConnectionWaiter) -> PendingConnect:
        """A new connection to `peer` for `waiter`, counted in flight until `release`;
        `start` it once the caller holds it (it may fail at once)."""
        poller = self._poller
        if poller is None and peer.ip_family:
            poller = self._poller = poller_for(self.loop)  # in the worker, on first use
        return PendingConnect(
            peer,
            waiter,
            self.protocol,
            self.release,
            self.loop,
            self.config.connect_timeout,
            poller if peer.ip_family else None,
        )

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The exchange on `conn` is over: hand it to an exchange still connecting to the
        same peer, keep it for reuse, or close it."""
        peer = conn.peer
        waiters = self._waiters[peer.index]
        if reusable and waiters and not conn.closed:
            # A connect costs far more than a reuse: under load, requests that found no
            # idle connection take the ones released while they connect.
            while waiters:
                if waiters.popleft().take_connection(conn):
                    return  # still counted in flight, now for the waiter's request
        peer.active -= 1
        if self.queue and peer.max_conns:
            self._wake_queue()  # a place this worker counts itself
        if not reusable or conn.closed or self.idle_count >= self._idle_cap:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle[peer.index].append(conn)
        self.idle_count += 1
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def wait_for_release(self, peer: Peer, waiter: ConnectionWaiter) -> None:
        """`waiter` is connecting to `peer`: offer it a connection released meanwhile."""
        self._waiters[peer.index].append(waiter)

    def forget_waiter(self, peer: Peer, waiter: ConnectionWaiter) -> None:
        # One scan of the deque, not `in` and then `remove` (suppress() would cost a
        # context manager per connect).
        try:
            self._waiters[peer.index].remove(waiter)
        except ValueError:
            return  # `release` took it off already

    def waiting(self, peer: Peer) -> int:
        """Requests connecting to `peer` that a released connection would go to."""
        return len(self._waiters[peer.index])

    def idle_connections(self, peer: Peer) -> int:
        return len(self._idle[peer.index])

    def _take_idle(self, peer: Peer) -> UpstreamConnection | None:
        idle = self._idle[peer.index]
        deadline = time.monotonic() - self.config.keepalive_timeout
        while idle:
            conn = idle.pop()  # newest first: the likeliest to be warm
            self.idle_count -= 1
            if not conn.closed and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    def _sweep(self) -> None:
        """Close idle connections past keepalive_timeout, then the surplus above
        `keepalive` that stayed unused for SURPLUS_GRACE, oldest first."""
        self._sweeper = None
        now = time.monotonic()
        expired = now - self.config.keepalive_timeout
        unused = now - SURPLUS_GRACE
        for idle in self._idle:
            while idle and (idle[0].closed or idle[0].idle_since <= expired):
                idle.popleft().close()
                self.idle_count -= 1
        for idle in self._idle:
            while self.idle_count > self.config.keepalive and idle and idle[0].idle_since <= unused:
                idle.popleft().close()
                self.idle_count -= 1
        if self.idle_count:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        for handle in (self._queue_poll, self._queue_wake):
            if handle is not None:
                handle.cancel()
        self._queue_poll = self._queue_wake = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle:
            while idle:
                idle.pop().close()
        self.idle_count = 0

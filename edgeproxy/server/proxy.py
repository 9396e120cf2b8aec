"""proxy_pass: choose a peer, send it the complete request, retry safely.

ProxyExchange gets the request to a peer; the way back, the response relayed to the
client, is its base class ResponseRelay (edgeproxy.server.proxy_relay). A WebSocket upgrade
goes the same way; the peer's answer decides: a 101 joins the two connections in a Tunnel,
anything else is relayed as any response.

Retries follow nginx's next_upstream: a failed connect may always go to the next peer (the
request never left); other errors and timeouts only for idempotent methods unless
`non_idempotent` is listed; 502/503/504 answers only when `http_50x` is listed. Nothing is
retried once the client has seen a byte of the response.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from typing import Final

from edgeproxy.errors import UpstreamError
from edgeproxy.http.logtext import request_line
from edgeproxy.server.body import SpoolError
from edgeproxy.server.proxy_relay import ResponseRelay
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.response import Answer
from edgeproxy.server.static.accel import InternalRedirects
from edgeproxy.upstream.connect import PendingConnect
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.proxy")

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
RETRY_STATUS: Final = {502: "http_502", 503: "http_503", 504: "http_504"}


class ProxyHandler:
    """`proxy_pass`: one ProxyExchange per request to the pool."""

    __slots__ = ("pool", "redirects", "temp_path")

    def __init__(self, pool: UpstreamPool, temp_path: str) -> None:
        self.pool = pool
        self.temp_path = temp_path
        self.redirects = InternalRedirects()  # where X-Accel-Redirect answers go

    def start(self, request: Request, client: Client) -> Responder | None:
        try:
            exchange = ProxyExchange(self.pool, request, client, self.temp_path, self.redirects)
        except UpstreamError as exc:
            # The request cannot be put in the pool's protocol (a uwsgi variables block
            # over 64 KiB): no peer would take it.
            log.error("upstream %s: %s: %s", self.pool.name, request_line(request.head), exc)
            client.out.send_error(exc.status)
            return None
        return exchange.start()


class ProxyExchange(ResponseRelay):
    """One request's trip to the upstream pool and back, driven by callbacks: choosing a
    peer, waiting for a max_conns place, connecting, sending the request, and retrying on
    failures; the response's way back is ResponseRelay's."""

    __slots__ = (
        "attempts",
        "body_chunks",
        "connecting",
        "last_status",
        "queued",
        "request_head",
        "reused",
        "stale_retried",
        "tried",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        request: Request,
        client: Client,
        temp: str,
        redirects: InternalRedirects,
    ) -> None:
        super().__init__(pool, request, client, temp, redirects)
        route = request.route
        self.request_head = pool.protocol.encode_request_head(
            request.head,
            route.default_host,
            request.peer_ip,
            request.client_ip,
            request.body.size,
            pool.keepalive,
            client.ports,
            route.scheme,
            request.request_id,
        )
        self.tried: set[Peer] = set()
        self.attempts = 0
        self.queued: asyncio.TimerHandle | None = None  # waiting in the queue, until this
        self.connecting: PendingConnect | None = None
        self.reused = False
        self.stale_retried = False
        self.body_chunks: Iterator[bytes | bytearray] | None = None
        self.last_status = 0

    def start(self) -> ProxyExchange | None:
        """Send the request on its way; None when it is already answered (no live peer)."""
        self.try_next_peer()
        if self.done:
            return None
        self.attached = True
        return self

    # --- choosing a peer and sending the request ---

    def try_next_peer(self) -> None:
        pool = self.pool
        if self.attempts >= pool.config.next_upstream_tries:
            self._give_up()
            return
        if self.slot_peer is not None:
            self._release_slot()
        peer = pool.select(self.tried, self.request.client_ip)
        if peer is None:
            if pool.only_full(self.tried):
                self._wait_in_queue()
                return
            if self.attempts == 0:
                log.error("upstream %s: no live peers", pool.name)
            self._give_up()
            return
        self._use_peer(peer)

    def _use_peer(self, peer: Peer) -> None:
        pool = self.pool
        if peer.slots is not None:
            self.slot_peer = peer
        self.tried.add(peer)
        self.attempts += 1
        self.peer = peer
        self.sent_at = peer.attempted(self.attempts > 1)
        self.request.upstream_try(peer.name, self.sent_at)
        conn = pool.acquire_idle(peer)
        if conn is not None:
            self.request.upstream_connected(at_once=True)
            self._begin(conn, reused=True)
        else:
            self._connect(peer)

    # --- waiting for a max_conns place ---

    @property
    def key(self) -> str:
        return self.request.client_ip

    def _wait_in_queue(self) -> None:
        pool = self.pool
        queue = pool.config.queue
        assert queue is not None
        if not pool.enqueue(self):
            log.error("upstream %s: every server is at max_conns and the queue is full", pool.name)
            self._refuse_busy()
            return
        self.queued = pool.loop.call_later(queue.timeout, self._queue_timed_out)

    def take_peer(self, peer: Peer) -> None:
        """The pool's queue gives us a place."""
        if self.queued is not None:
            self.queued.cancel()
            self.queued = None
        self._use_peer(peer)

    def _queue_timed_out(self) -> None:
        self.queued = None
        self.pool.leave_queue(self)
        log.error("upstream %s: no max_conns place within the queue timeout", self.pool.name)
        self._refuse_busy()

    def _refuse_busy(self) -> None:
        queue = self.pool.config.queue
        assert queue is not None
        retry_after = b"%d" % max(1, math.ceil(queue.timeout))
        self.request.upstream_status = self.request.upstream_status or 503
        self.client.out.send_answer(Answer(503, [(b"Retry-After", retry_after)]))
        self._finish()

    def _connect(self, peer: Peer) -> None:
        # Only when no idle connection is at hand: behind gunicorn's sync workers, always.
        pool = self.pool
        pending = self.connecting = pool.connect(peer, self)
        pool.wait_for_release(peer, self)  # a connection released meanwhile is taken
        pending.start()

    def connect_failed(self, error: UpstreamError) -> None:
        """The connect asked for in `_connect` failed or timed out."""
        self.connecting = None
        assert self.peer is not None
        self.pool.forget_waiter(self.peer, self)
        self._failed(error, started=False)

    def take_connection(self, conn: UpstreamConnection) -> bool:
        """A keep-alive connection to our peer, released while we were connecting."""
        pending = self.connecting
        if pending is None or self.done or conn.peer is not self.peer:
            return False
        self.connecting = None
        pending.abandon()  # the connect goes on; its connection goes to the pool
        self.request.upstream_connected(at_once=False)
        self._begin(conn, reused=True)
        return True

    def take_new_connection(self, conn: UpstreamConnection) -> bool:
        """The connection being made for us, the moment it is made."""
        if self.connecting is None or self.done or conn.peer is not self.peer:
            return False
        self.connecting = None
        self.pool.forget_waiter(conn.peer, self)
        self.request.upstream_connected(at_once=False)
        self._begin(conn, reused=False)
        return True

    def _begin(self, conn: UpstreamConnection, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        head = self.request.head
        conn.begin(self, head.method, self.pool.config.read_timeout, head.upgrade)
        parts = self.request.body.in_memory()
        if parts is not None:
            conn.write_parts(self.request_head, parts)
            return
        self.body_chunks = self.request.body.chunks()
        if conn.write(self.request_head):
            self._send_body()

    def _send_body(self) -> None:
        chunks = self.body_chunks
        conn = self.conn
        if chunks is None or conn is None:
            return
        try:
            for chunk in chunks:
                if not conn.write(chunk):
                    return  # on_upstream_writable resumes the loop where it stopped
        except SpoolError as exc:  # the spooled request body cannot be read back
            self._request_body_failed(exc)
            return
        self.body_chunks = None

    # --- callbacks from the upstream connection ---

    def on_upstream_writable(self) -> None:
        self._send_body()

    def on_upstream_error(self, error: UpstreamError) -> None:
        conn = self.conn
        self.conn = None
        self.body_chunks = None
        self._failed(error, started=conn is not None and conn.response_started)

    # --- failures ---

    def _retried(self, status: int) -> bool:
        """A 502/503/504 that next_upstream retries: dropped, and the request goes on to
        the next peer (ResponseRelay asks this of every 5xx head)."""
        if status not in RETRY_STATUS or not self._retry_status(status):
            return False
        if self.conn is not None:
            self.conn.abort_exchange()
            self.conn = None
        self.last_status = self.request.upstream_status = status
        self.request.upstream_ended()
        assert self.peer is not None
        self.pool.record_failure(self.peer, UpstreamError("error", f"{status}"))
        self.body_chunks = None
        self.try_next_peer()
        return True

    def _retry_status(self, status: int) -> bool:
        """Whether a 50x answer goes to the next peer rather than to the client."""
        if RETRY_STATUS[status] not in self.pool.config.next_upstream:
            return False
        # With no peer left to try, the 50x is passed on as the upstream sent it (nginx).
        return self.attempts < self.pool.config.next_upstream_tries and self.pool.has_candidate(
            self.tried
        )

    def _failed(self, error: UpstreamError, started: bool) -> None:
        pool = self.pool
        peer = self.peer
        assert peer is not None
        if self.done:
            return
        if self.head_sent:
            self.request.upstream_ended()
            line = request_line(self.request.head)
            log.error("upstream %s: %s %s: %s", pool.name, peer.name, line, error)
            self._close()
            self.client.abort()  # the client has part of a response: only a close tells it
            return
        if self.reused and not started and error.kind == "error" and not self.stale_retried:
            # A reused keep-alive connection the peer closed just as we sent: one more try
            # on a fresh connection, not counted as a failure (as nginx).
            self.stale_retried = True
            self._connect(peer)
            return
        line = request_line(self.request.head)
        log.error("upstream %s: %s %s: %s", pool.name, peer.name, line, error)
        self.request.upstream_status = error.status
        self.request.upstream_ended()
        pool.record_failure(peer, error)
        self.last_status = error.status
        retry_on = pool.config.next_upstream
        may_replay = (
            error.retryable
            or self.request.head.method in IDEMPOTENT
            or "non_idempotent" in retry_on
        )
        if error.kind in retry_on and may_replay:
            self.try_next_peer()
        else:
            self._give_up()

    def _request_body_failed(self, error: SpoolError) -> None:
        """Our temp file of the request body failed: 500 (as nginx), the peer not blamed."""
        log.error("upstream %s: %s: request body: %s", self.pool.name,
                  request_line(self.request.head), error)  # fmt: skip
        if self.conn is not None:
            self.conn.abort_exchange()
            self.conn = None
        if self.head_sent:  # the peer answered early, and part of it is out
            self._close()
            self.client.abort()
            return
        self.client.out.send_error(500)
        self._finish()

    def _give_up(self) -> None:
        status = self.last_status or 502
        self.request.upstream_status = self.request.upstream_status or status
        self.client.out.send_error(status)
        self._finish()

    def client_gone(self) -> None:
        """The client connection closed: stop everything, reuse nothing half-done."""
        if self.inner is not None:
            self.inner.client_gone()
            self.inner = None
        if self.queued is not None:
            self.queued.cancel()
            self.queued = None
            self.pool.leave_queue(self)  # at once: its place goes to the next one
        self.request.upstream_ended()  # if an attempt was under way
        if self.conn is not None:
            self.conn.abort_exchange()
            self.conn = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
            if self.peer is not None:
                self.pool.forget_waiter(self.peer, self)
        self._close()

    def _close(self) -> None:
        super()._close()
        self.body_chunks = None  # the request body's reader, if still open

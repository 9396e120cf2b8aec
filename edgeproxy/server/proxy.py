"""proxy_pass: send the complete request to a peer, relay the response, retry safely.

A WebSocket upgrade goes the same way; the peer's answer decides: a 101 joins the two
connections in a Tunnel (edgeproxy.server.tunnel), anything else is relayed as any response.

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
from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import header_values, response_fields
from edgeproxy.http.logtext import request_line
from edgeproxy.http.rules import comma_tokens
from edgeproxy.server.body import ResponseSpool, SpoolError
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.response import Answer
from edgeproxy.server.static.accel import InternalRedirects, redirect_target
from edgeproxy.server.tunnel import Tunnel
from edgeproxy.upstream.connect import PendingConnect
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.proxy")

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
RETRY_STATUS: Final = {502: "http_502", 503: "http_503", 504: "http_504"}
# The fields of our 101: hop-by-hop, so dropped from the peer's with the others.
_SWITCH_FIELDS: Final = [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]


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


class ProxyExchange:
    """One request's trip to the upstream pool and back, driven by callbacks.

    The response is written to the client as it arrives while the client keeps up; what
    it is not ready for goes to a spool (memory, then a temp file), so the peer is read at
    its own speed and released as soon as its response is complete.
    """

    __slots__ = (
        "attached",
        "attempts",
        "body_chunks",
        "client",
        "conn",
        "connecting",
        "done",
        "head_sent",
        "inner",
        "last_status",
        "peer",
        "pool",
        "queued",
        "redirects",
        "request",
        "request_head",
        "reused",
        "sent_at",
        "slot_peer",
        "spool",
        "stale_retried",
        "temp_path",
        "tried",
        "upstream_done",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        request: Request,
        client: Client,
        temp: str,
        redirects: InternalRedirects,
    ) -> None:
        self.pool = pool
        self.redirects = redirects
        # The handler answering in the upstream's place after an X-Accel-Redirect.
        self.inner: Responder | None = None
        self.request = request
        self.client = client
        self.temp_path = temp
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
        self.peer: Peer | None = None
        self.slot_peer: Peer | None = None  # the peer whose instance-wide slot we hold
        self.queued: asyncio.TimerHandle | None = None  # waiting in the queue, until this
        self.conn: UpstreamConnection | None = None
        self.connecting: PendingConnect | None = None
        self.reused = False
        self.sent_at = 0.0  # when the current peer was chosen, for the metrics
        self.stale_retried = False
        self.body_chunks: Iterator[bytes | bytearray] | None = None
        self.spool: ResponseSpool | None = None
        self.head_sent = False
        self.upstream_done = False
        self.done = False
        self.last_status = 0
        self.attached = False  # start() has returned: the end is told to the client

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

    def on_response(self, head: ResponseHead | None, chunks: list[bytes], complete: bool) -> None:
        if complete:
            self.conn = None  # already released by the connection
        if head is not None:
            self.request.upstream_head()
            if head.status in RETRY_STATUS and self._retry_status(head.status):
                if self.conn is not None:
                    self.conn.abort_exchange()
                    self.conn = None
                self.last_status = self.request.upstream_status = head.status
                self.request.upstream_ended()
                assert self.peer is not None
                self.pool.record_failure(self.peer, UpstreamError("error", f"{head.status}"))
                self.body_chunks = None
                self.try_next_peer()
                return
            self.request.upstream_status = head.status
            accel = redirect_target(head.headers)
            if accel is not None:
                self._internal_redirect(accel, complete)
                return
            headers = response_fields(head)
            out = self.client.out
            self.head_sent = True
            if complete:
                # The usual small response, whole already: one write, with a known length.
                body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
                length = head.content_length if head.content_length is not None else len(body)
                out.send_head(head.status, headers, length, head.reason, body)
                self._upstream_finished()
                return
            out.send_head(head.status, headers, head.content_length, head.reason)
        for chunk in chunks:
            self._deliver(chunk)
        if self.done:  # a spool failure ended it
            return
        if complete:
            self._upstream_finished()

    def on_switching_protocols(self, head: ResponseHead) -> None:
        """The peer accepted the WebSocket upgrade: answer 101, then tunnel both ways."""
        conn = self.conn
        peer = self.peer
        assert conn is not None and peer is not None
        self.conn = None
        self.request.upstream_status = 101
        self.request.upstream_head()
        self.request.upstream_ended()
        if comma_tokens(header_values(head.headers, b"upgrade")) != [b"websocket"]:
            log.error("upstream %s: %s switched to another protocol than asked",
                      self.pool.name, peer.name)  # fmt: skip
            conn.abort_exchange()
            self.pool.record_failure(peer, UpstreamError("error", "wrong upgrade"))
            self._give_up()
            return
        peer.record_success()
        out = self.client.out
        # Not closed after this response: the connection becomes the tunnel.
        out.keep_alive = True
        headers = response_fields(head)
        headers += _SWITCH_FIELDS
        out.send_head(101, headers, None, head.reason)
        self.head_sent = True
        self._close()
        name = f"{self.request.client_ip} -> {peer.name}"
        tunnel = Tunnel(self.pool.loop, self.pool.config.read_timeout, name)
        tunnel.client.on_lost = self.client.hand_over(tunnel.client)
        tunnel.upstream.on_lost = conn.detach(tunnel.upstream)

    def on_upstream_error(self, error: UpstreamError) -> None:
        conn = self.conn
        self.conn = None
        self.body_chunks = None
        self._failed(error, started=conn is not None and conn.response_started)

    # --- relaying to the client ---

    def _deliver(self, data: bytes) -> None:
        out = self.client.out
        spool = self.spool
        if out.writable and (spool is None or not spool.pending):
            out.write(data)  # the client keeps up: no copy, no spool
            return
        if spool is None:
            settings = self.request.route.server.http  # only when the client falls behind
            file_limit = settings.proxy_max_temp_file_size if settings.proxy_buffering else 0
            spool = self.spool = ResponseSpool(
                settings.proxy_buffers_size, file_limit, self.temp_path
            )
        try:
            spool.put(data)
        except SpoolError as exc:
            self._spool_failed(exc)
            return
        if spool.full and self.conn is not None:
            self.conn.pause_reading()

    def on_client_full(self) -> None:
        pass  # _deliver sees `out.writable` and spools what the client is not ready for

    def on_client_writable(self) -> None:
        if self.inner is not None:
            self.inner.on_client_writable()
            return
        spool = self.spool
        if spool is None or self.done:
            return
        out = self.client.out
        was_full = spool.full
        try:
            while spool.pending and out.writable:
                out.write(spool.pop())
        except SpoolError as exc:
            self._spool_failed(exc)
            return
        if was_full and not spool.full and self.conn is not None:
            self.conn.resume_reading()
        if self.upstream_done and not spool.pending:
            self._finish()

    def _internal_redirect(self, uri: bytes, complete: bool) -> None:
        """X-Accel-Redirect: the upstream's answer (head and body) is dropped and the file
        it names answers instead; nothing of the upstream's response reaches the client."""
        if not complete and self.conn is not None:
            self.conn.abort_exchange()  # the rest of its body is not wanted
            self.conn = None
        assert self.peer is not None
        self.peer.record_success()
        self.request.upstream_ended()
        self._close()
        responder = self.redirects.start(self.request, uri, self.client)
        if responder is not None:
            self.inner = responder
        elif self.attached:
            self.client.handler_done()

    def _upstream_finished(self) -> None:
        self.upstream_done = True
        assert self.peer is not None
        self.request.upstream_ended(self.peer.responded(self.sent_at))  # one clock read
        if self.slot_peer is not None:
            self._release_slot()  # the peer is free, however long the client takes
        self.peer.record_success()
        if self.spool is None or not self.spool.pending:
            self._finish()

    def _finish(self) -> None:
        out = self.client.out
        if out.chunked:
            out.finish()
        self._close()
        if self.attached:
            self.client.handler_done()

    # --- failures ---

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

    def _spool_failed(self, error: SpoolError) -> None:
        """The response spool's temp file failed (temp_path gone, full): the head is out,
        so closing the connection is the only way to tell the client its response is cut
        short (as nginx). The peer did nothing wrong: it is not marked failed."""
        log.error("upstream %s: %s %s: response body: %s; closing the client connection",
                  self.pool.name, self.request.upstream_addr, request_line(self.request.head),
                  error)  # fmt: skip
        if self.conn is not None:
            self.conn.abort_exchange()
            self.conn = None
        self._close()
        self.client.abort()

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

    def _release_slot(self) -> None:
        peer = self.slot_peer
        self.slot_peer = None
        if peer is not None:
            self.pool.release_slot(peer)

    def _close(self) -> None:
        if self.slot_peer is not None:
            self._release_slot()
        self.done = True
        self.body_chunks = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

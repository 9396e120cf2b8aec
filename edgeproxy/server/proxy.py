"""proxy_pass: send the complete request to a peer, relay the response, retry safely.

Retries follow nginx's next_upstream: a failed connect may always go to the next peer (the
request never left); other errors and timeouts only for idempotent methods unless
`non_idempotent` is listed; 502/503/504 answers only when `http_50x` is listed. Nothing is
retried once the client has seen a byte of the response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Protocol

from edgeproxy.config.model import ProxyPass
from edgeproxy.errors import UpstreamError
from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import (
    PLAIN_CONNECTION,
    REQUEST_REPLACED,
    RESPONSE_REPLACED,
    end_to_end,
)
from edgeproxy.server.body import ResponseSpool
from edgeproxy.server.request import Request
from edgeproxy.server.response import ResponseWriter
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.proxy")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Methods whose requests carry a body by definition: always send Content-Length, even 0.
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
RETRY_STATUS = {502: "http_502", 503: "http_503", 504: "http_504"}


def upstream_request_head(request: Request, keepalive: bool) -> bytes:
    """The normalised request for the peer: our framing, forwarding fields, no hop-by-hop."""
    head = request.head
    host = head.host or request.server.default_host
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    forwarded = b""  # the X-Forwarded-For the client sent, joined
    names_fields = False  # a Connection field names other fields: they go too
    # One pass: fields passed on, X-Forwarded-For collected (end_to_end plus header_values).
    for name, value in head.headers:
        if name not in REQUEST_REPLACED:
            parts += (name, b": ", value, b"\r\n")
        elif name == b"x-forwarded-for":
            forwarded = forwarded + b", " + value if forwarded else value
        elif name == b"connection" and value not in PLAIN_CONNECTION:
            names_fields = True
    if names_fields:
        del parts[6:]
        for name, value in end_to_end(head.headers, REQUEST_REPLACED):
            parts += (name, b": ", value, b"\r\n")
    peer_ip = request.peer_ip.encode()
    client_ip = peer_ip if request.client_ip is request.peer_ip else request.client_ip.encode()
    parts += (
        b"x-forwarded-for: ", forwarded + b", " + peer_ip if forwarded else peer_ip,
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: ", host,
        b"\r\nx-real-ip: ", client_ip, b"\r\n",
    )  # fmt: skip
    size = request.body.size
    if size or head.method in BODY_METHODS:
        parts.append(b"content-length: %d\r\n" % size)
    if not keepalive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _forget_waiter(peer: Peer, exchange: ProxyExchange) -> None:
    # One scan of the deque, not `in` and then `remove` (suppress() would cost a context
    # manager per connect).
    try:
        peer.waiters.remove(exchange)
    except ValueError:
        return  # the pool took it off already


class Client(Protocol):
    """What an exchange needs of the client connection (DownstreamConnection)."""

    out: ResponseWriter

    def exchange_done(self) -> None:
        """The response is completely written."""

    def abort(self) -> None:
        """Drop the connection: part of a response went out and the rest cannot follow."""


class ProxyHandler:
    """Starts one ProxyExchange per request; holds what they share."""

    def __init__(self, pools: Mapping[str, UpstreamPool], temp_path: str) -> None:
        self.pools = pools
        self.temp_path = temp_path

    def exchange(self, request: Request, client: Client) -> ProxyExchange:
        """A new exchange for `request`; the caller starts it with `try_next_peer()`."""
        location = request.location
        assert location is not None and isinstance(location.handler, ProxyPass)
        return ProxyExchange(self.pools[location.handler.upstream], request, client, self.temp_path)


class ProxyExchange:
    """One request's trip to the upstream pool and back, driven by callbacks.

    The response is written to the client as it arrives while the client keeps up; what
    it is not ready for goes to a spool (memory, then a temp file), so the peer is read at
    its own speed and released as soon as its response is complete.
    """

    __slots__ = (
        "attempts",
        "body_chunks",
        "client",
        "conn",
        "connecting",
        "done",
        "head_sent",
        "last_status",
        "peer",
        "pool",
        "request",
        "request_head",
        "reused",
        "settings",
        "spool",
        "stale_retried",
        "temp_path",
        "tried",
        "upstream_done",
    )

    def __init__(self, pool: UpstreamPool, request: Request, client: Client, temp: str) -> None:
        self.pool = pool
        self.request = request
        self.client = client
        self.temp_path = temp
        self.settings = request.server.config.http
        self.request_head = upstream_request_head(request, pool.config.keepalive > 0)
        self.tried: set[Peer] = set()
        self.attempts = 0
        self.peer: Peer | None = None
        self.conn: UpstreamConnection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.reused = False
        self.stale_retried = False
        self.body_chunks: Iterator[bytes | bytearray] | None = None
        self.spool: ResponseSpool | None = None
        self.head_sent = False
        self.upstream_done = False
        self.done = False
        self.last_status = 0

    # --- choosing a peer and sending the request ---

    def try_next_peer(self) -> None:
        pool = self.pool
        if self.attempts >= pool.config.next_upstream_tries:
            self._give_up()
            return
        peer = pool.select(self.tried, self.request.client_ip)
        if peer is None:
            if self.attempts == 0:
                log.error("upstream %s: no live peers", pool.name)
            self._give_up()
            return
        self.tried.add(peer)
        self.attempts += 1
        self.peer = peer
        self.request.upstream_addr = peer.name
        conn = pool.acquire_idle(peer)
        if conn is not None:
            self._begin(conn, reused=True)
        else:
            self._connect(peer)

    def _connect(self, peer: Peer) -> None:
        # The one await of the request path, and only when no idle connection is at hand.
        self.connecting = self.pool.loop.create_task(self._connect_async(peer))
        peer.waiters.append(self)  # a connection released meanwhile is taken instead

    async def _connect_async(self, peer: Peer) -> None:
        task = asyncio.current_task()  # self.connecting, unless a connection was taken
        assert task is not None
        try:
            conn = await self.pool.connect(peer, task)
        except UpstreamError as exc:
            if self.connecting is task:
                self.connecting = None
                _forget_waiter(peer, self)
                self._failed(exc, started=False)
            return
        if self.connecting is not task or self.done:
            # A released connection was taken meanwhile, or the client left: this one
            # goes to the pool for other requests.
            self.pool.release(conn, True)
            return
        self.connecting = None
        _forget_waiter(peer, self)
        self._begin(conn, reused=False)

    def take_connection(self, conn: UpstreamConnection) -> bool:
        """A keep-alive connection to our peer, released while we were connecting."""
        if self.connecting is None or self.done or conn.peer is not self.peer:
            return False
        self.connecting = None  # the connect goes on; its connection goes to the pool
        self._begin(conn, reused=True)
        return True

    def _begin(self, conn: UpstreamConnection, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        conn.begin(self, self.request.head.method, self.pool.config.read_timeout)
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
        for chunk in chunks:
            if not conn.write(chunk):
                return  # on_upstream_writable resumes the loop where it stopped
        self.body_chunks = None

    # --- callbacks from the upstream connection ---

    def on_upstream_writable(self) -> None:
        self._send_body()

    def on_response(self, head: ResponseHead | None, chunks: list[bytes], complete: bool) -> None:
        if complete:
            self.conn = None  # already released by the connection
        if head is not None:
            if head.status in RETRY_STATUS and self._retry_status(head.status):
                if self.conn is not None:
                    self.conn.abort_exchange()
                    self.conn = None
                self.last_status = head.status
                assert self.peer is not None
                self.pool.record_failure(self.peer, UpstreamError("error", f"{head.status}"))
                self.body_chunks = None
                self.try_next_peer()
                return
            self.request.upstream_status = head.status
            headers = end_to_end(head.headers, RESPONSE_REPLACED)
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
        if complete:
            self._upstream_finished()

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
            settings = self.settings
            file_limit = settings.proxy_max_temp_file_size if settings.proxy_buffering else 0
            spool = self.spool = ResponseSpool(
                settings.proxy_buffers_size, file_limit, self.temp_path
            )
        spool.put(data)
        if spool.full and self.conn is not None:
            self.conn.pause_reading()

    def on_client_writable(self) -> None:
        spool = self.spool
        if spool is None or self.done:
            return
        out = self.client.out
        was_full = spool.full
        while spool.pending and out.writable:
            out.write(spool.pop())
        if was_full and not spool.full and self.conn is not None:
            self.conn.resume_reading()
        if self.upstream_done and not spool.pending:
            self._finish()

    def _upstream_finished(self) -> None:
        self.upstream_done = True
        assert self.peer is not None
        self.peer.record_success()
        if self.spool is None or not self.spool.pending:
            self._finish()

    def _finish(self) -> None:
        out = self.client.out
        if out.chunked:
            out.finish()
        self._close()
        self.client.exchange_done()

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
            log.error(
                "upstream %s: %s %s: %s", pool.name, peer.name, self.request.head.target, error
            )
            self._close()
            self.client.abort()  # the client has part of a response: only a close tells it
            return
        if self.reused and not started and error.kind == "error" and not self.stale_retried:
            # A reused keep-alive connection the peer closed just as we sent: one more try
            # on a fresh connection, not counted as a failure (as nginx).
            self.stale_retried = True
            self._connect(peer)
            return
        log.error("upstream %s: %s %s: %s", pool.name, peer.name, self.request.head.target, error)
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

    def _give_up(self) -> None:
        status = self.last_status or 502
        self.request.upstream_status = self.request.upstream_status or status
        self.client.out.send_error(status)
        self._finish()

    def client_gone(self) -> None:
        """The client connection closed: stop everything, reuse nothing half-done."""
        if self.conn is not None:
            self.conn.abort_exchange()
            self.conn = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
            if self.peer is not None:
                _forget_waiter(self.peer, self)
        self._close()

    def _close(self) -> None:
        self.done = True
        self.body_chunks = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

"""proxy_pass's way back: relay the peer's response to the client.

The response is written to the client as it arrives while the client keeps up; what it is
not ready for goes to a spool (memory, then a temp file), so the peer is read at its own
speed and released as soon as its response is complete. An X-Accel-Redirect answer is
dropped and the file it names answers instead. A 101 to a WebSocket upgrade joins the two
connections in a Tunnel (edgeproxy.server.tunnel).

ResponseRelay is the base of edgeproxy.server.proxy's ProxyExchange, which chooses the peer
and gets the request to it; the relay asks it two things (`_retried`, `_give_up`).
"""

from __future__ import annotations

import logging
from typing import Final

from edgeproxy.errors import UpstreamError
from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import header_values, response_fields
from edgeproxy.http.logtext import request_line
from edgeproxy.http.rules import comma_tokens
from edgeproxy.server.body import ResponseSpool, SpoolError
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.static.accel import InternalRedirects, redirect_target
from edgeproxy.server.tunnel import Tunnel
from edgeproxy.upstream.connection import UpstreamConnection
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.proxy")

# The fields of our 101: hop-by-hop, so dropped from the peer's with the others.
_SWITCH_FIELDS: Final = [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]


class ResponseRelay:
    """The response half of one request's trip to the upstream pool, and the state both
    halves share: the request, the client, the peer answering and its connection."""

    __slots__ = (
        "attached",
        "client",
        "conn",
        "done",
        "head_sent",
        "inner",
        "peer",
        "pool",
        "redirects",
        "request",
        "sent_at",
        "slot_peer",
        "spool",
        "temp_path",
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
        self.peer: Peer | None = None
        self.slot_peer: Peer | None = None  # the peer whose instance-wide slot we hold
        self.conn: UpstreamConnection | None = None
        self.sent_at = 0.0  # when the current peer was chosen, for the metrics
        self.spool: ResponseSpool | None = None
        self.head_sent = False
        self.upstream_done = False
        self.done = False
        self.attached = False  # start() has returned: the end is told to the client

    # --- what the subclass does: the other half ---

    def _retried(self, status: int) -> bool:
        """Whether this error answer (5xx) sends the request to the next peer instead of
        to the client (then it has gone)."""
        raise NotImplementedError

    def _give_up(self) -> None:
        """Answer the client with the error the tries ended on."""
        raise NotImplementedError

    # --- callbacks from the upstream connection ---

    def on_response(self, head: ResponseHead | None, chunks: list[bytes], complete: bool) -> None:
        if complete:
            self.conn = None  # already released by the connection
        if head is not None:
            self.request.upstream_head()
            # Only an error answer may go to the next peer: no call for the others.
            if head.status >= 500 and self._retried(head.status):
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

    # --- the end ---

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

    def _release_slot(self) -> None:
        peer = self.slot_peer
        self.slot_peer = None
        if peer is not None:
            self.pool.release_slot(peer)

    def _close(self) -> None:
        if self.slot_peer is not None:
            self._release_slot()
        self.done = True
        if self.spool is not None:
            self.spool.close()
            self.spool = None

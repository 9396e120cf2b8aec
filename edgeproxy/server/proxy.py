"""proxy_pass: send the complete request to a peer, relay the response, retry safely.

Retries follow nginx's next_upstream: a failed connect may always go to the next peer (the
request never left); other errors and timeouts only for idempotent methods unless
`non_idempotent` is listed; 502/503/504 answers only when `http_50x` is listed. Nothing is
retried once the client has seen a byte of the response.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from edgeproxy.errors import UpstreamError
from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import REQUEST_REPLACED, RESPONSE_REPLACED, end_to_end, header_values
from edgeproxy.server.body import ResponseBuffer
from edgeproxy.server.request import Request
from edgeproxy.server.response import ResponseWriter
from edgeproxy.upstream.peer import Peer
from edgeproxy.upstream.pool import UpstreamPool

log = logging.getLogger("edgeproxy.proxy")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Methods whose requests carry a body by definition: always send Content-Length, even 0.
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
RETRY_STATUS = {502: "http_502", 503: "http_503", 504: "http_504"}


class RetryableStatus(Exception):
    """A 50x answer the config says to retry elsewhere."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status


def upstream_request_head(request: Request, keepalive: bool) -> bytes:
    """The normalised request for the peer: our framing, forwarding fields, no hop-by-hop."""
    head = request.head
    host = head.host or request.server.default_host
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in end_to_end(head.headers, REQUEST_REPLACED):
        parts += (name, b": ", value, b"\r\n")
    peer_ip = request.peer_ip.encode()
    forwarded = header_values(head.headers, b"x-forwarded-for")
    xff = b", ".join([*forwarded, peer_ip]) if forwarded else peer_ip
    parts += (
        b"x-forwarded-for: ", xff,
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: ", host,
        b"\r\nx-real-ip: ", request.client_ip.encode(), b"\r\n",
    )  # fmt: skip
    size = request.body.size
    if size or head.method in BODY_METHODS:
        parts.append(b"content-length: %d\r\n" % size)
    if not keepalive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def request_pieces(head_bytes: bytes, request: Request) -> Iterator[bytes]:
    """The request as writes: head and an in-memory body together, or head then file chunks."""
    body = request.body.in_memory()
    if body is not None:
        yield head_bytes + body if body else head_bytes
        return
    yield head_bytes
    yield from request.body.chunks()


class ProxyHandler:
    def __init__(self, pools: Mapping[str, UpstreamPool], temp_path: str) -> None:
        self.pools = pools
        self.temp_path = temp_path

    async def handle(self, request: Request, out: ResponseWriter) -> None:
        location = request.location
        assert location is not None and location.proxy_pass is not None
        pool = self.pools[location.proxy_pass]
        config = pool.config
        retry_on = config.next_upstream
        may_replay = request.head.method in IDEMPOTENT or "non_idempotent" in retry_on
        tried: set[Peer] = set()
        status = 502
        for attempt in range(config.next_upstream_tries):
            peer = pool.select(tried, request.client_ip)
            if peer is None:
                if attempt == 0:
                    log.error("upstream %s: no live peers", pool.name)
                break
            tried.add(peer)
            request.upstream_addr = peer.name
            # With no peer left to try, a 50x is passed on as the upstream sent it (nginx).
            last_try = attempt + 1 == config.next_upstream_tries or not pool.has_candidate(tried)
            try:
                await self._exchange(pool, peer, request, out, retry_statuses=not last_try)
                peer.record_success()
                return
            except RetryableStatus as exc:
                status = exc.status
                pool.record_failure(peer, UpstreamError("error", str(exc)))
                continue
            except UpstreamError as exc:
                log.error("upstream %s: %s %s: %s", pool.name, peer.name, request.head.target, exc)
                pool.record_failure(peer, exc)
                status = exc.status
                if out.started:
                    raise  # the client has part of a response: the connection must drop
                if exc.kind not in retry_on or not (exc.retryable or may_replay):
                    break
        request.upstream_status = request.upstream_status or status
        out.send_error(status)

    async def _exchange(
        self,
        pool: UpstreamPool,
        peer: Peer,
        request: Request,
        out: ResponseWriter,
        *,
        retry_statuses: bool,
    ) -> None:
        settings = request.server.config.http
        head_bytes = upstream_request_head(request, pool.config.keepalive > 0)
        # A reused keep-alive connection may have been closed by the peer just as we sent;
        # that earns one more try on a fresh connection, as in nginx.
        for _ in range(2):
            conn, reused = await pool.acquire(peer)
            buffer = ResponseBuffer(
                settings.proxy_buffers_size,
                settings.proxy_max_temp_file_size if settings.proxy_buffering else 0,
                self.temp_path,
                conn.resume_from_buffer,
            )
            head_future = conn.begin(
                request.head.method, buffer, pool.config.read_timeout, pool.release
            )
            try:
                await conn.send(request_pieces(head_bytes, request))
                head = await head_future
                break
            except UpstreamError as exc:
                conn.abort_exchange()
                buffer.close()
                if reused and exc.kind == "error" and not conn.response_started:
                    continue
                raise
            except BaseException:
                conn.abort_exchange()
                buffer.close()
                raise
        else:
            raise UpstreamError("error", "keep-alive connections closed by the peer")
        try:
            await self._relay(head, buffer, request, out, pool, retry_statuses)
        except BaseException:
            conn.abort_exchange()
            raise
        finally:
            buffer.close()

    async def _relay(
        self,
        head: ResponseHead,
        buffer: ResponseBuffer,
        request: Request,
        out: ResponseWriter,
        pool: UpstreamPool,
        retry_statuses: bool,
    ) -> None:
        request.upstream_status = head.status
        if retry_statuses and RETRY_STATUS.get(head.status) in pool.config.next_upstream:
            raise RetryableStatus(head.status)
        headers = end_to_end(head.headers, RESPONSE_REPLACED)
        whole = buffer.take_all_in_memory()
        if whole is not None and head.content_length is None and not out.no_body:
            # Complete already (the usual small response): send it with a known length.
            out.send_head(head.status, headers, len(whole), head.reason, whole)
            return
        out.send_head(head.status, headers, head.content_length, head.reason, whole or b"")
        if whole is not None:
            return
        while (chunk := await buffer.get()) is not None:
            await out.write(chunk)
        await out.finish()

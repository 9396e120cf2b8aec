"""One connection to a peer: sends a complete request, reads the response at full speed.

The response body goes into a ResponseBuffer as fast as the peer sends it; reading pauses
only while that buffer is full (memory + temp file, or the small window of unbuffered mode).
When the response is complete the connection hands itself back via `on_done` at once,
whatever the client is doing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

from edgeproxy.errors import UpstreamError
from edgeproxy.http.codec import HeadCodec, MalformedResponse
from edgeproxy.http.events import END_OF_MESSAGE, NEED_DATA, ResponseHead
from edgeproxy.http.reader import ResponseReader
from edgeproxy.server.body import ResponseBuffer
from edgeproxy.server.timer import LazyTimer
from edgeproxy.upstream.peer import Peer


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, peer: Peer, codec: HeadCodec) -> None:
        self.peer = peer
        self.codec = codec
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests = 0  # exchanges started on this connection
        self._reader: ResponseReader | None = None
        self._buffer: ResponseBuffer | None = None
        self._head: asyncio.Future[ResponseHead] | None = None
        self._on_done: Callable[[UpstreamConnection, bool], None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._read_timeout = 60.0
        self._timer = LazyTimer(self.loop, self._on_read_timeout)

    # --- exchange API (used by the proxy handler) ---

    @property
    def response_started(self) -> bool:
        return self._reader is not None and self._reader.started

    def begin(
        self,
        method: bytes,
        buffer: ResponseBuffer,
        read_timeout: float,
        on_done: Callable[[UpstreamConnection, bool], None],
    ) -> asyncio.Future[ResponseHead]:
        """Start an exchange; the future resolves with the response head."""
        self.requests += 1
        self._reader = ResponseReader(self.codec, method)
        self._buffer = buffer
        self._on_done = on_done
        self._read_timeout = read_timeout
        self._head = self.loop.create_future()
        self._timer.start(read_timeout)
        return self._head

    async def send(self, pieces: Iterable[bytes]) -> None:
        """Write the request, waiting for the peer to take it (bounded by read_timeout)."""
        transport = self.transport
        for piece in pieces:
            if self.closed or transport is None:
                raise UpstreamError("error", "connection closed while sending the request")
            transport.write(piece)
            if self._paused_writing:
                self._drain = self.loop.create_future()
                try:
                    async with asyncio.timeout(self._read_timeout):
                        await self._drain
                except TimeoutError:
                    raise UpstreamError("timeout", "timed out sending the request") from None
                finally:
                    self._drain = None
            # The peer took it: read_timeout runs from the end of the request (as nginx's
            # proxy_read_timeout), not from its start, so a big body may take longer.
            self._timer.touch(self._read_timeout)

    def resume_from_buffer(self) -> None:
        """The buffer has room again: read on (called by ResponseBuffer)."""
        if self.transport is not None and not self.closed and self._buffer is not None:
            self.transport.resume_reading()
            self._timer.start(self._read_timeout)

    def abort_exchange(self) -> None:
        """Cut the current exchange short (client gone, error): never reuse this connection."""
        head_future = self._head
        if head_future is not None and not head_future.done():
            head_future.cancel()
        elif head_future is not None and not head_future.cancelled():
            head_future.exception()  # mark any error as seen; the caller has handled it
        if self._reader is not None:
            self._fail(UpstreamError("error", "exchange abandoned"))

    def close(self) -> None:
        self.closed = True
        self._timer.stop()
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            # Bytes on an idle connection: the peer is out of step; never reuse it.
            self.close()
            return
        self._timer.touch(self._read_timeout)
        reader.feed(data)
        self._pump()

    def eof_received(self) -> bool:
        reader = self._reader
        if reader is not None:
            try:
                reader.feed_eof()
            except MalformedResponse as exc:
                self._fail(UpstreamError("error", str(exc)))
                return False
            self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._timer.stop()
        if self._reader is not None:
            detail = f"connection lost: {exc}" if exc else "upstream closed the connection"
            self._fail(UpstreamError("error", detail))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamError("error", "connection lost while sending"))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- internals ---

    def _pump(self) -> None:
        reader = self._reader
        buffer = self._buffer
        assert reader is not None and buffer is not None
        try:
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                if type(event) is bytes:
                    buffer.put(event)
                elif event is END_OF_MESSAGE:
                    self._complete()
                    return
                else:
                    assert isinstance(event, ResponseHead)
                    head_future = self._head
                    if head_future is not None and not head_future.done():
                        head_future.set_result(event)
        except MalformedResponse as exc:
            self._fail(UpstreamError("error", f"malformed response: {exc}"))
            return
        if buffer.full and self.transport is not None:
            # The client is slower than the peer and the buffer is at its cap: wait for it.
            self.transport.pause_reading()
            self._timer.stop()

    def _complete(self) -> None:
        buffer = self._buffer
        head_future = self._head
        on_done = self._on_done
        reusable = (
            head_future is not None
            and head_future.done()
            and not head_future.cancelled()
            and head_future.exception() is None
            and head_future.result().keep_alive
            and not self._reader_has_leftovers()
        )
        self._end_exchange()
        if buffer is not None:
            buffer.finish()
        if on_done is not None:
            on_done(self, reusable)

    def _reader_has_leftovers(self) -> bool:
        return self._reader is not None and bool(self._reader.buf)

    def _fail(self, error: UpstreamError) -> None:
        head_future = self._head
        buffer = self._buffer
        on_done = self._on_done
        self._end_exchange()
        if head_future is not None and not head_future.done():
            head_future.set_exception(error)
        elif buffer is not None:
            buffer.fail(error)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(error)  # the real cause (a timeout), not "connection lost"
        self.close()
        if on_done is not None:
            on_done(self, False)

    def _end_exchange(self) -> None:
        self._timer.stop()
        self._reader = None
        self._buffer = None
        self._head = None
        self._on_done = None
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _on_read_timeout(self) -> None:
        if self._reader is not None:
            self._fail(UpstreamError("timeout", "upstream timed out"))

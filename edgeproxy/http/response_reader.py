"""The sans-IO reader of upstream responses: the same head rules as requests, and framing
by RFC 9112 6.3 (length, chunked, or until the upstream closes). Raises MalformedResponse."""

from __future__ import annotations

from typing import NoReturn

from edgeproxy.http.codec import HeadCodec, MalformedResponse
from edgeproxy.http.events import (
    NEED_DATA,
    EndOfMessage,
    NeedData,
    ResponseHead,
)
from edgeproxy.http.framing import (
    BodyDecoder,
    ChunkedDecoder,
    FramingError,
    LengthDecoder,
    UntilCloseDecoder,
)
from edgeproxy.http.reader import (
    BODY,
    HEAD,
    NO_BODY,
    HeadScanner,
    comma_tokens,
    single_length,
)

MAX_RESPONSE_HEAD = 64 * 1024  # nginx proxy_buffer_size is 4k|8k; Python apps set big cookies

ResponseEvent = ResponseHead | bytes | EndOfMessage | NeedData


class ResponseReader(HeadScanner):
    """Upstream responses: hardening and framing. Raises MalformedResponse.

    Informational (1xx) responses are skipped: we never ask for 100-continue or upgrades.
    """

    __slots__ = ("head_only", "started")

    def __init__(self, codec: HeadCodec, request_method: bytes) -> None:
        super().__init__(codec, MAX_RESPONSE_HEAD)
        self.head_only = request_method == b"HEAD"
        self.started = False  # some byte of a response arrived

    def reset(self, request_method: bytes) -> None:
        """Ready for the response to the next request on the same connection."""
        self.buf.clear()
        self._scan_from = 0
        self.head_only = request_method == b"HEAD"
        self._state = HEAD
        self._decoder = NO_BODY
        self.started = False

    def feed(self, data: bytes) -> None:
        self.started = True
        self.buf += data

    def feed_eof(self) -> None:
        """The upstream closed. Ends an until-close body; otherwise the response is broken."""
        if self._state == HEAD:
            raise MalformedResponse("upstream closed the connection before a complete head")
        try:
            self._decoder.eof()
        except FramingError as exc:
            raise MalformedResponse(str(exc)) from None

    def next_event(self) -> ResponseEvent:
        if self._state != HEAD:
            return self._body_event()
        while True:
            head_bytes = self._checked_head()
            if head_bytes is None:
                return NEED_DATA
            head = self.codec.parse_response_head(head_bytes)
            if head.status >= 200:
                break
            if head.status == 101:
                raise MalformedResponse("unexpected 101 Switching Protocols")
        self._decoder = self._frame(head)
        self._state = BODY
        return head

    def _frame(self, head: ResponseHead) -> BodyDecoder:
        codings: list[bytes] = []
        lengths: list[bytes] = []
        connection: list[bytes] = []
        for name, value in head.headers:
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.append(value)
            elif name == b"connection":
                connection.append(value)
        tokens = comma_tokens(connection) if connection else []
        if head.version == b"1.1":
            head.keep_alive = b"close" not in tokens
        else:
            head.keep_alive = b"keep-alive" in tokens
        if lengths and not codings:
            length = single_length(lengths)
            if length is None:
                raise MalformedResponse("invalid Content-Length")
            head.content_length = length
        if self.head_only or head.status in (204, 304):
            return NO_BODY
        if codings:
            # RFC 9112 6.3: Transfer-Encoding overrides Content-Length; not reusing the
            # connection afterwards keeps a disagreement from poisoning the next response.
            if lengths:
                head.keep_alive = False
            if comma_tokens(codings)[-1:] == [b"chunked"]:
                head.chunked = True
                return ChunkedDecoder(MAX_RESPONSE_HEAD)
            head.keep_alive = False
            return UntilCloseDecoder()
        if head.content_length is not None:
            return LengthDecoder(head.content_length)
        head.keep_alive = False
        return UntilCloseDecoder()

    def _too_large(self) -> NoReturn:
        raise MalformedResponse("upstream sent too big a header")

    def _malformed(self, why: str) -> NoReturn:
        raise MalformedResponse(why)

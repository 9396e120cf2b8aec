"""The sans-IO reader of upstream responses: the same head rules as requests, and framing
by RFC 9112 6.3 (length, chunked, or until the upstream closes). Raises MalformedResponse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NoReturn

from edgeproxy.http.events import (
    END_OF_MESSAGE,
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
from edgeproxy.http.interface import HeadCodec, MalformedResponse
from edgeproxy.http.reader import BODY, DONE, HEAD, NO_BODY, HeadScanner
from edgeproxy.http.rules import comma_tokens, single_length

MAX_RESPONSE_HEAD: Final = (
    64 * 1024
)  # nginx proxy_buffer_size is 4k|8k; Python apps set big cookies

ResponseEvent = ResponseHead | bytes | EndOfMessage | NeedData

# How a response body is delimited (RFC 9112 6.3), decided once for every codec.
NO_BODY_FRAMING, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)

_CONTENT_LENGTH: Final = 0
_CONNECTION: Final = 1
_TRANSFER_ENCODING: Final = 2
_FRAMING_FIELDS: Final = {
    b"content-length": _CONTENT_LENGTH,
    b"connection": _CONNECTION,
    b"transfer-encoding": _TRANSFER_ENCODING,
}


def response_framing(head: ResponseHead, head_only: bool) -> int:
    """Sets head.keep_alive/content_length/chunked; returns the body framing.

    Raises MalformedResponse for a Content-Length that is not exactly one number.
    """
    codings: list[bytes] = []
    lengths: list[bytes] = []
    connection: list[bytes] = []
    for name, value in head.headers:
        field = _FRAMING_FIELDS.get(name)  # one lookup rather than three comparisons
        if field is None:
            continue
        if field == _CONTENT_LENGTH:
            lengths.append(value)
        elif field == _CONNECTION:
            connection.append(value)
        else:
            codings.append(value)
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
    if head_only or head.status in (204, 304):
        return NO_BODY_FRAMING
    if codings:
        # RFC 9112 6.3: Transfer-Encoding overrides Content-Length; not reusing the
        # connection afterwards keeps a disagreement from poisoning the next response.
        if lengths:
            head.keep_alive = False
        if comma_tokens(codings)[-1:] == [b"chunked"]:
            head.chunked = True
            return CHUNKED
        head.keep_alive = False
        return UNTIL_CLOSE
    if head.content_length is not None:
        return LENGTH
    head.keep_alive = False
    return UNTIL_CLOSE


class ResponseReader(HeadScanner):
    """Upstream responses on a head-at-a-time codec (h11): hardening and framing.

    The ResponseParser interface (edgeproxy.http.interface): `feed` bytes, then read `head`,
    take the `body` pieces, and check `complete`. Raises MalformedResponse.
    Informational (1xx) responses are skipped: we never ask for 100-continue. A 101 ends
    the response at its head when an upgrade was asked for (`reset`), and is malformed
    otherwise.
    """

    __slots__ = ("body", "complete", "head", "head_only", "parse_head", "upgrade")

    def __init__(self, codec: HeadCodec, parse_head: Callable[[bytes], ResponseHead]) -> None:
        super().__init__(codec, MAX_RESPONSE_HEAD)
        self.parse_head = parse_head
        self.head_only = False
        self.upgrade = False
        self.head: ResponseHead | None = None
        self.body: list[bytes] = []
        self.complete = False

    def reset(self, request_method: bytes, upgrade: bool = False) -> None:
        """Ready for the response to the next request on the same connection."""
        self.upgrade = upgrade
        self.buf.clear()
        self._scan_from = self._checked_to = 0
        self.head_only = request_method == b"HEAD"
        self._state = HEAD
        self._decoder = NO_BODY
        self.head = None
        self.body = []
        self.complete = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        while not self.complete:
            event = self._next_event()
            if event is NEED_DATA:
                return
            if type(event) is bytes:
                self.body.append(event)
            elif event is END_OF_MESSAGE:
                self.complete = True

    def feed_eof(self) -> None:
        """The upstream closed. Ends an until-close body; otherwise the response is broken."""
        if self._state == HEAD:
            raise MalformedResponse("upstream closed the connection before a complete head")
        try:
            self._decoder.eof()
        except FramingError as exc:
            raise MalformedResponse(str(exc)) from None
        self.feed(b"")

    def close(self) -> None:
        self.buf.clear()

    def reusable(self) -> bool:
        """The response is complete, keep-alive, and nothing came after it."""
        return self.complete and self.head is not None and self.head.keep_alive and not self.buf

    def _next_event(self) -> ResponseEvent:
        if self._state != HEAD:
            return self._body_event()
        while True:
            head_bytes = self._checked_head()
            if head_bytes is None:
                return NEED_DATA
            head = self.parse_head(head_bytes)
            if head.status >= 200:
                break
            if head.status == 101:
                if not self.upgrade:
                    raise MalformedResponse("unexpected 101 Switching Protocols")
                return self._switched(head)
        self._decoder = self._frame(head)
        self._state = BODY
        self.head = head
        return head

    def _switched(self, head: ResponseHead) -> EndOfMessage:
        """A 101: what follows its head is the new protocol's, handed on as it is."""
        head.keep_alive = False
        self.head = head
        self._state = DONE
        if self.buf:
            self.body.append(bytes(self.buf))
            self.buf.clear()
        return END_OF_MESSAGE

    def _frame(self, head: ResponseHead) -> BodyDecoder:
        framing = response_framing(head, self.head_only)
        if framing == LENGTH:
            assert head.content_length is not None
            return LengthDecoder(head.content_length)
        if framing == CHUNKED:
            return ChunkedDecoder(MAX_RESPONSE_HEAD)
        if framing == UNTIL_CLOSE:
            return UntilCloseDecoder()
        return NO_BODY

    def _too_large(self) -> NoReturn:
        raise MalformedResponse("upstream sent too big a header")

    def _malformed(self, why: str) -> NoReturn:
        raise MalformedResponse(why)

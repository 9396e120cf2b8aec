"""Sans-IO message readers: bytes in, neutral events out, one set of rules for every codec.

A reader locates the head in the byte stream (enforcing the head size limit as bytes
arrive), refuses what h11-style parsers would let through (bare LF/CR, obs-fold, NUL,
ambiguous framing), has the codec parse the head, then frames the body itself.

Usage: `reader.feed(data)`, then call `reader.next_event()` until it returns NEED_DATA.
After END_OF_MESSAGE the request reader returns NEED_DATA until `start_next()`.
Upstream responses have their reader in edgeproxy.http.response_reader, on the same base.
"""

from __future__ import annotations

import re
from typing import Final, NoReturn

from edgeproxy.errors import ClientError
from edgeproxy.http.events import (
    END_OF_MESSAGE,
    NEED_DATA,
    EndOfMessage,
    NeedData,
    RequestHead,
)
from edgeproxy.http.framing import (
    BodyDecoder,
    ChunkedDecoder,
    FramingError,
    LengthDecoder,
)
from edgeproxy.http.interface import HeadCodec
from edgeproxy.http.rules import BAD_REQUEST, apply_request_rules, check_raw_head

NO_BODY: Final = LengthDecoder(0)  # shared: a zero-length decoder never changes state

HEAD, BODY, DONE = 0, 1, 2  # reader states

RequestEvent = RequestHead | bytes | EndOfMessage | NeedData

# A well-formed request line (RFC 9112 3): what a request refused for its head is logged with.
_REQUEST_LINE: Final = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e\x80-\xff]+) HTTP/([0-9]\.[0-9])\r\n"
)


class RefusedRequest(ClientError):
    """A request refused for its head (a missing Host, say) although its request line was
    well-formed: `received` holds that line, and the fields when the codec parsed them, so
    that the logs show what was received rather than nothing."""

    def __init__(self, refusal: ClientError, received: RequestHead) -> None:
        super().__init__(refusal.status, refusal.reason)
        self.received = received


def _refused(refusal: ClientError, head: bytes, parsed: RequestHead | None) -> ClientError:
    """`refusal`, with the request line of `head` when it has a well-formed one (only on
    this error path: a valid request never pays for it)."""
    line = _REQUEST_LINE.match(head)
    if line is None:
        return refusal
    headers = parsed.headers if parsed is not None else []
    return RefusedRequest(refusal, RequestHead(line[1], line[2], line[3], headers))


class HeadScanner:
    """What both readers share: cutting off one message head at a time (with the size
    limit and raw checks) and framing the body that follows, in states HEAD/BODY/DONE."""

    __slots__ = (
        "_checked_to",
        "_decoder",
        "_direct",
        "_scan_from",
        "_state",
        "buf",
        "codec",
        "max_head",
    )

    def __init__(self, codec: HeadCodec, max_head: int) -> None:
        self.buf = bytearray()
        self.codec = codec
        self.max_head = max_head
        self._scan_from = 0
        self._checked_to = 0  # the partial head is raw-checked up to here (a line start)
        self._state = HEAD
        self._decoder: BodyDecoder = NO_BODY
        # Bytes fed while the buffer was empty: a head that came whole, or the body of a
        # length-framed request, is passed on as it is, with no copy through the buffer.
        self._direct: bytes | None = None

    def _body_event(self) -> bytes | EndOfMessage | NeedData:
        """The next body piece, END_OF_MESSAGE, or NEED_DATA (state BODY or DONE)."""
        if self._state == DONE:
            return NEED_DATA
        decoder = self._decoder
        direct = self._direct
        if direct is not None:
            self._direct = None
            if type(decoder) is LengthDecoder and not decoder.done:
                data, rest = decoder.take(direct)
                if rest:
                    self.buf += rest  # the start of a pipelined request
                return data
            self.buf += direct
        if not decoder.done:
            if self.buf:
                try:
                    data = decoder.decode(self.buf)
                except FramingError as exc:
                    self._malformed(str(exc))
                if data:
                    return data
            if not decoder.done:
                return NEED_DATA
        self._state = DONE
        return END_OF_MESSAGE

    def _checked_head(self) -> bytes | None:
        """The next complete head, raw-checked unless the codec does that itself."""
        head = self._take_head()
        if head is not None and self.codec.needs_raw_checks:
            problem = check_raw_head(head)
            if problem:
                self._malformed(problem)
        return head

    def feed(self, data: bytes) -> None:
        if self._state != DONE and not self.buf and self._direct is None:
            self._direct = data
            return
        if self._direct is not None:
            self.buf += self._direct
            self._direct = None
        self.buf += data

    def _take_head(self) -> bytes | None:
        direct = self._direct
        if direct is not None:
            # The usual case: a whole head arrived in one read, with nothing before it.
            self._direct = None
            end = direct.find(b"\r\n\r\n")
            if end > 0 and end + 4 <= self.max_head and direct[:1] != b"\r":
                cut = end + 4
                if cut == len(direct):
                    return direct  # no copy at all
                self.buf += direct[cut:]  # pipelined bytes after it
                return direct[:cut]
            self.buf += direct
        buf = self.buf
        if not buf:
            return None
        if buf[:2] == b"\r\n":
            # RFC 9112 2.2: ignore empty lines before a request line (clients' stray CRLFs).
            skip = 2
            while buf[skip : skip + 2] == b"\r\n":
                skip += 2
            del buf[:skip]
            self._scan_from = self._checked_to = 0
        end = buf.find(b"\r\n\r\n", max(0, self._scan_from - 3))
        if end < 0:
            self._scan_from = len(buf)
            self._check_partial()
            return None
        cut = end + 4
        if cut > self.max_head:
            self._too_large()
        head = bytes(buf[:cut])
        del buf[:cut]
        self._scan_from = self._checked_to = 0
        return head

    def _check_partial(self) -> None:
        if len(self.buf) > self.max_head:
            self._too_large()
        # Only the lines completed since the last call: a head sent a byte at a time must
        # not be rescanned whole at every byte.
        buf = self.buf
        start = self._checked_to
        end = buf.rfind(b"\n", start) + 1
        if end <= start:
            return
        if start and buf[start] in b" \t":
            self._malformed("obsolete line folding in message head")
        problem = check_raw_head(buf[start:end])
        if problem:
            self._malformed(problem)
        self._checked_to = end

    def _too_large(self) -> NoReturn:
        raise NotImplementedError

    def _malformed(self, why: str) -> NoReturn:
        raise NotImplementedError


class RequestReader(HeadScanner):
    """Client requests: size limits, hardening, framing. Raises ClientError(status)."""

    __slots__ = ("_valid_host",)

    def __init__(self, codec: HeadCodec, max_head: int) -> None:
        super().__init__(codec, max_head)
        self._valid_host = b""

    @property
    def idle(self) -> bool:
        """No byte of a next request has arrived (keep-alive idle, or a fresh connection)."""
        return self._state == HEAD and not self.buf and self._direct is None

    def end_bodiless(self) -> None:
        """The head just returned announced no body: the request is complete (what
        next_event would say with END_OF_MESSAGE, without the round trip)."""
        self._state = DONE

    def start_next(self) -> None:
        self._state = HEAD
        self._decoder = NO_BODY

    def next_event(self) -> RequestEvent:
        if self._state != HEAD:
            return self._body_event()
        head_bytes = self._checked_head()
        if head_bytes is None:
            return NEED_DATA
        try:
            head = self.codec.parse_request_head(head_bytes)
        except ClientError as exc:
            raise _refused(exc, head_bytes, None) from None
        try:
            self._valid_host = apply_request_rules(head, self._valid_host)
        except ClientError as exc:
            raise _refused(exc, head_bytes, head) from None
        if head.chunked:
            self._decoder = ChunkedDecoder(self.max_head)
        elif head.content_length:
            self._decoder = LengthDecoder(head.content_length)
        else:
            self._decoder = NO_BODY
        self._state = BODY
        return head

    def _too_large(self) -> NoReturn:
        first_line_end = self.buf.find(b"\r\n", 0, self.max_head)
        if first_line_end < 0:
            raise ClientError(414, "request target too long")
        raise ClientError(431, "request header fields too large")

    def _malformed(self, why: str) -> NoReturn:
        raise ClientError(BAD_REQUEST, why)

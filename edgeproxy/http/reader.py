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
from collections.abc import Sequence
from typing import NoReturn

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

NO_BODY = LengthDecoder(0)  # shared: a zero-length decoder never changes state
_HOST_RE = re.compile(rb"^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$")
# Controls other than CR, LF and HTAB; llhttp refuses them, h11 lets some through.
_CONTROL_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Methods are case-sensitive upper-case tokens in practice; nginx refuses anything else.
_METHOD_RE = re.compile(rb"^[A-Z][A-Z0-9_-]*$")
_COMMON_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE"}
)

HEAD, BODY, DONE = 0, 1, 2  # reader states

# The request fields the shared rules look at (none has an underscore: see _apply_rules).
_HOST, _CONNECTION, _CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT = range(5)
_RULE_FIELDS = {
    b"host": _HOST,
    b"connection": _CONNECTION,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
}

RequestEvent = RequestHead | bytes | EndOfMessage | NeedData


def check_raw_head(head: bytes | bytearray) -> str | None:
    """What is wrong with the raw head bytes, or None. Shared by both directions."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare LF in message head"
    if head.count(b"\r") != crlf:
        return "bare CR in message head"
    if b"\r\n " in head or b"\r\n\t" in head:
        return "obsolete line folding in message head"
    if _CONTROL_RE.search(head):
        return "control character in message head"
    return None


# The usual one-token values, already split and lowercased: no work for them per message.
_SINGLE_TOKENS: dict[bytes, list[bytes]] = {
    value: [value.lower()]
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"chunked", b"100-continue")
}


def comma_tokens(values: list[bytes]) -> Sequence[bytes]:
    """The lowercased tokens of comma-separated field values (read-only: may be shared)."""
    if len(values) == 1:
        common = _SINGLE_TOKENS.get(values[0])
        if common is not None:
            return common
    return [t.strip().lower() for v in values for t in v.split(b",") if t.strip()]


def single_length(values: list[bytes]) -> int | None:
    """The Content-Length; None unless it is exactly one field of digits (as nginx)."""
    if len(values) != 1:
        return None
    value = values[0]
    if not value or len(value) > 18:  # 18 digits cannot overflow a 64-bit integer
        return None
    length = 0
    for char in value:  # a compiled loop: cheaper than int(), and digits only (no sign, no _)
        if char < 48 or char > 57:
            return None
        length = length * 10 + char - 48
    return length


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
        head = self.codec.parse_request_head(head_bytes)
        self._apply_rules(head)
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
        raise ClientError(400, why)

    def _apply_rules(self, head: RequestHead) -> None:
        """Framing, Host, keep-alive and Expect, identically for every codec."""
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: list[bytes] = []
        hosts: list[bytes] = []
        expect: list[bytes] = []
        underscores = False
        for name, value in head.headers:
            field = _RULE_FIELDS.get(name)  # one lookup rather than five comparisons
            if field is None:
                if b"_" in name:
                    underscores = True
            elif field == _HOST:
                hosts.append(value)
            elif field == _CONNECTION:
                connection.append(value)
            elif field == _CONTENT_LENGTH:
                lengths.append(value)
            elif field == _TRANSFER_ENCODING:
                codings.append(value)
            else:
                expect.append(value)
        if underscores:
            # nginx's ignore_invalid_headers: WSGI maps X_Foo and X-Foo to one variable.
            head.headers = [item for item in head.headers if b"_" not in item[0]]
        http11 = head.version == b"1.1"
        if not http11 and head.version != b"1.0":
            raise ClientError(505, "unsupported HTTP version")
        if head.method not in _COMMON_METHODS and not _METHOD_RE.match(head.method):
            raise ClientError(400, "invalid method")
        if head.method == b"CONNECT":
            raise ClientError(405, "CONNECT is not supported")
        if codings:
            if lengths:
                raise ClientError(400, "both Content-Length and Transfer-Encoding")
            if not http11:
                raise ClientError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if comma_tokens(codings) != [b"chunked"]:
                raise ClientError(501, "unsupported Transfer-Encoding")
            head.chunked = True
        elif lengths:
            length = single_length(lengths)
            if length is None:
                raise ClientError(400, "invalid Content-Length")
            head.content_length = length
        target = head.target
        if target[:1] != b"/":
            target = self._origin_form(head)
        if len(hosts) > 1:
            raise ClientError(400, "more than one Host")
        if hosts and not head.host:
            head.host = hosts[0]
        if http11 and not hosts:
            raise ClientError(400, "missing Host")
        host = head.host
        if host and host != self._valid_host:
            if not _HOST_RE.match(host):
                raise ClientError(400, "invalid Host")
            self._valid_host = host  # clients repeat their Host on every request
        tokens = comma_tokens(connection) if connection else []
        head.keep_alive = b"close" not in tokens if http11 else b"keep-alive" in tokens
        if expect:
            if comma_tokens(expect) != [b"100-continue"]:
                raise ClientError(417, "unsupported Expect")
            head.expect_continue = http11

    @staticmethod
    def _origin_form(head: RequestHead) -> bytes:
        """Absolute-form targets (RFC 9112 3.2.2): the authority replaces Host."""
        target = head.target
        lowered = target[:8].lower()
        if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
            if not authority or b"@" in authority:
                raise ClientError(400, "invalid absolute-form target")
            head.host = authority
            head.target = path
            return path
        if target == b"*" and head.method == b"OPTIONS":
            return target
        raise ClientError(400, "invalid request target")

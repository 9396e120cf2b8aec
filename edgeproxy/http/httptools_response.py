"""Upstream responses through one persistent llhttp parser per upstream connection.

llhttp reads the whole stream: the head, then the body framed in C (length, chunked,
until close), with no Python work per chunk-size line. The framing decision itself is
the shared `response_framing`, the same as for every other codec; llhttp's own leniencies
on framing fields are off (see httptools_codec) so that it frames exactly as decided.

llhttp checks the head's syntax, but its fields are not taken from it one callback at a
time (each costs a Python call and two bytes objects in httptools): once llhttp has
accepted a whole head, its bytes are split here, which its checks make simple (CRLF line
ends, no folded lines, no control characters, a `:` in every field line). Trailer fields
are checked by llhttp and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import httptools

from edgeproxy.http.events import ResponseHead
from edgeproxy.http.headers import common_spellings, lowercase_name
from edgeproxy.http.interface import MalformedResponse
from edgeproxy.http.response_reader import (
    MAX_RESPONSE_HEAD,
    NO_BODY_FRAMING,
    UNTIL_CLOSE,
    response_framing,
)

Fields = list[tuple[bytes, bytes]]


class _StopParsing(Exception):
    """Raised from a callback to end a response llhttp would read a body for (HEAD)."""


AnyParser = TypeVar("AnyParser", httptools.HttpRequestParser, httptools.HttpResponseParser)


def lenient(parser: AnyParser) -> AnyParser:
    """`parser` with llhttp's opinions on framing fields switched off, for requests and
    responses alike: the shared rules decide those, identically for every codec."""
    parser.set_dangerous_leniencies(
        lenient_transfer_encoding=True, lenient_chunked_length=True, lenient_keep_alive=True
    )
    return parser


def _new_parser(callbacks: object) -> httptools.HttpResponseParser:
    return lenient(httptools.HttpResponseParser(callbacks))


# Parsers whose connection closed, for the next connections: behind a server that closes
# every connection (gunicorn's sync workers) a parser per connection would be built and
# torn down per request. A worker never has more spares than connections it closed at once
# (capped below); a spare's llhttp waits at the start of a message.
_SPARES: Final[list[HttptoolsResponseParser]] = []
MAX_SPARES: Final = 256


def response_parser() -> HttptoolsResponseParser:
    """A parser for a new upstream connection: a spare if there is one."""
    if _SPARES:
        parser = _SPARES.pop()
        parser._spare = False
        return parser
    return HttptoolsResponseParser()


class HttptoolsResponseParser:
    """The ResponseParser interface (edgeproxy.http.interface) on llhttp."""

    __slots__ = (
        "_extra",
        "_framing",
        "_head_buf",
        "_head_data",
        "_head_only",
        "_interim",
        "_msg_start",
        "_parser",
        "_seen",
        "_spare",
        "_upgrade",
        "body",
        "complete",
        "head",
    )

    def __init__(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self._spare = False  # in _SPARES: closed, and not to be used until taken from there
        self.reset(b"GET")

    def reset(self, request_method: bytes, upgrade: bool = False) -> None:
        """Ready for the response to the next request on the same connection."""
        if self._parser is None:
            self._parser = _new_parser(self)
        self._upgrade = upgrade  # a 101 is accepted (and ends the response at its head)
        self._head_only = request_method == b"HEAD"
        self.head: ResponseHead | None = None
        self.body: list[bytes] = []
        self.complete = False
        # The bytes fed while no final head was complete (usually one feed's, uncopied),
        # and where in them the message being read began (after any 1xx heads).
        self._head_data: bytes = b""
        self._head_buf: bytearray | None = None  # ... when it came in several feeds
        self._msg_start = 0
        self._seen = 0  # bytes fed while no head was complete
        self._framing = NO_BODY_FRAMING
        self._interim = False  # the message being read is a 1xx, to be skipped
        self._extra = False  # bytes beyond the response: the peer is out of step

    def feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Only a response that was cut short leaves no parser; anything more is extra.
            self._extra = True
            return
        if self.head is None:
            if not self._seen:
                self._head_data = data
            else:  # a head in pieces: gathered in place, not copied again per piece
                buf = self._head_buf
                if buf is None:
                    buf = self._head_buf = bytearray(self._head_data)
                buf += data
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as switched:
            self._parser = None  # what follows is another protocol's
            if not self.complete:  # (on_headers_complete refused a 101 not asked for)
                raise MalformedResponse("unexpected 101 Switching Protocols") from None
            offset = switched.args[0]
            if offset < len(data):
                self.body.append(data[offset:])
        except httptools.HttpParserError as exc:
            self._parser = None  # llhttp stays in its error state: a new one for the next
            cause = exc.__context__  # what one of our callbacks raised, if one did
            if isinstance(cause, _StopParsing):
                pass  # a HEAD response, ended at its head (on_headers_complete)
            elif self.complete:
                self._extra = True  # the response is whole; what broke came after it
            elif isinstance(cause, MalformedResponse):
                raise cause from None
            else:
                raise MalformedResponse(str(exc)) from None
        if self.head is None:
            # llhttp buffers a long header line whole before calling back: cap it here.
            self._seen += len(data)
            if self._seen > MAX_RESPONSE_HEAD:
                self._parser = None
                raise MalformedResponse("upstream sent too big a header")

    def feed_eof(self) -> None:
        """The upstream closed. Ends an until-close body; otherwise the response is broken."""
        if self.complete:
            return
        if self.head is None:
            raise MalformedResponse("upstream closed the connection before a complete head")
        if self._framing != UNTIL_CLOSE:
            raise MalformedResponse("connection closed before the body was complete")
        self.complete = True
        self._parser = None  # llhttp still waits for the close it cannot be told about

    def reusable(self) -> bool:
        """The response is complete, keep-alive, and nothing came after it."""
        head = self.head
        return self.complete and head is not None and head.keep_alive and not self._extra

    def close(self) -> None:
        """The connection is gone: keep this parser as a spare for another one (its llhttp
        too, when it stopped between two messages), or let it go."""
        self._head_data = b""
        self._head_buf = None
        self.body = []
        self.head = None
        if not (self.complete and not self._extra):
            # Mid-message: llhttp's state is of no use to another connection. (llhttp
            # holds our bound methods as its callbacks: a reference cycle until cut.)
            self._parser = None
        if self._spare:
            return  # closed twice: a spare once only
        if len(_SPARES) < MAX_SPARES:
            self._spare = True
            _SPARES.append(self)
        else:
            self._parser = None

    # --- llhttp callbacks ---

    def on_message_begin(self) -> None:
        if self.complete:
            self._extra = True

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        parser = self._parser
        assert parser is not None
        buf = self._head_buf
        data = self._head_data if buf is None else bytes(buf)
        start = self._msg_start
        end = data.find(b"\r\n\r\n", start)  # llhttp accepted CRLF line ends only
        if end < 0 or end - start > MAX_RESPONSE_HEAD:
            raise MalformedResponse("upstream sent too big a header")
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                if not self._upgrade:
                    raise MalformedResponse("unexpected 101 Switching Protocols")
                self._switched(parser, data, start, end)
                return
            self._interim = True  # e.g. 100 Continue or 103 Early Hints: not passed on
            self._msg_start = end + 4
            return
        head = _parsed_head(parser, data, start, end, status)
        self._head_data = b""  # not held for the body's time
        self._head_buf = None
        self._framing = response_framing(head, self._head_only)
        self.head = head
        if self._framing == NO_BODY_FRAMING and self._head_only:
            # llhttp cannot be told that a HEAD response has no body: end it here. Bytes
            # fed past the head mean the peer is out of step (never reused).
            self.complete = True
            self._extra = len(data) > end + 4
            raise _StopParsing

    def _switched(
        self, parser: httptools.HttpResponseParser, data: bytes, start: int, end: int
    ) -> None:
        """A 101 asked for: the response ends at its head; llhttp then stops with
        HttpParserUpgrade at the first byte of the new protocol (see `feed`)."""
        head = _parsed_head(parser, data, start, end, 101)
        head.keep_alive = False
        self._head_data = b""
        self._head_buf = None
        self.head = head
        self.complete = True

    def on_body(self, data: bytes) -> None:
        if not self.complete:
            self.body.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self.head is not None:
            self.complete = True


def split_head(data: bytes, start: int, end: int) -> tuple[bytes, Fields, Fields]:
    """The head `data[start:end]` (without its blank line): its status line, and its fields
    as (lowercased name, value) and (name as sent, value) pairs. In C when built
    (edgeproxy.http._fields, one call instead of a few method calls per field)."""
    lines = data[start:end].split(b"\r\n")
    headers: Fields = []
    spelled: Fields = []
    for i in range(1, len(lines)):
        line = lines[i]
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError("a field line without ':'")
        value = value.strip(b" \t")
        headers.append((lowercase_name(name), value))
        spelled.append((name, value))
    return lines[0], headers, spelled


def _head_splitter() -> Callable[[bytes, int, int], tuple[bytes, Fields, Fields]]:
    """The C split where it is built; in a pure install, the same in Python."""
    try:
        from edgeproxy.http import _fields
    except ImportError:
        return split_head
    _fields.set_names(common_spellings())  # the names lowercase_name shares, shared there too
    return _fields.split_head


# Final: bound once, a static of the compiled module rather than a global looked up per head.
split_fields: Final = _head_splitter()


def _parsed_head(
    parser: httptools.HttpResponseParser, data: bytes, start: int, end: int, status: int
) -> ResponseHead:
    try:
        status_line, headers, spelled = split_fields(data, start, end)
    except ValueError as exc:  # (llhttp refuses such a head first)
        raise MalformedResponse(str(exc)) from None
    # "HTTP/d.d ddd[ reason]", as llhttp accepted it.
    ok = status_line[8:9] == b" "
    version = status_line[5:8] if ok else parser.get_http_version().encode()
    return ResponseHead(status, status_line[13:], version, headers, spelled)

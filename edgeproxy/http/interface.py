"""The codec interface: what a codec offers the readers, and the error for upstream responses.

A codec parses one complete message head (the bytes up to and including the blank line) into
a neutral RequestHead/ResponseHead, or raises ClientError / MalformedResponse. Locating the
head in the stream, size limits, hardening rules and body framing are done once for every
codec in edgeproxy.http.reader, so a new codec cannot weaken them.

For upstream responses a codec may instead read the whole stream (`response_parser`):
httptools frames response bodies in C. The framing decision is still the shared
`response_framing`, and tests/unit/test_response_parser.py holds every codec to the same
answers.

The table of codecs by name is edgeproxy.http.codec; the codecs import this module, never
that one.
"""

from __future__ import annotations

from typing import Protocol

from edgeproxy.http.events import RequestHead, ResponseHead


class MalformedResponse(Exception):
    """An upstream sent a response we cannot parse (answered 502)."""


class ResponseParser(Protocol):
    """Reads the responses on one upstream connection, one per `reset`.

    After each `feed`: `head` is the response head once parsed, `body` holds the body
    pieces not yet taken (the caller empties it), `complete` says the response has ended.
    `feed` and `feed_eof` raise MalformedResponse.
    """

    head: ResponseHead | None
    body: list[bytes]
    complete: bool

    def reset(self, request_method: bytes, upgrade: bool = False) -> None:
        """Ready for the next response. With `upgrade` (a WebSocket upgrade was asked for)
        a 101 is accepted: the response is `complete` at its head, and `body` then holds
        the bytes that followed the head (the new protocol's). Without it a 101 is
        malformed."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...

    def reusable(self) -> bool:
        """Complete, keep-alive, and no byte beyond it: the connection may serve again."""
        ...

    def close(self) -> None:
        """The connection is gone: drop what the parser holds (and any reference cycle
        through it, so that the connection is freed at once rather than by the GC). The
        codec may hand the parser to a later connection; its caller never uses it again."""
        ...


class HeadCodec(Protocol):
    name: str
    # False when the parser itself refuses bare CR/LF, obs-fold and control characters
    # (llhttp does; h11 does not), so the reader can skip its own scan of complete heads.
    # tests/unit/test_reader.py holds every codec to the same answers either way.
    needs_raw_checks: bool

    def parse_request_head(self, head: bytes) -> RequestHead:
        """`head`: one whole request head, through its blank line and nothing after it
        (the reader cuts heads there)."""
        ...

    def response_parser(self) -> ResponseParser:
        """A parser for the responses of one upstream connection."""
        ...

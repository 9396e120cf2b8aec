"""The codec interface and the table of codecs, chosen by `http_parser`.

A codec parses one complete message head (the bytes up to and including the blank line) into
a neutral RequestHead/ResponseHead, or raises ClientError / MalformedResponse. Locating the
head in the stream, size limits, hardening rules and body framing are done once for every
codec in edgeproxy.http.reader, so a new codec cannot weaken them.

For upstream responses a codec may instead read the whole stream (`response_parser`):
httptools frames response bodies in C. The framing decision is still the shared
`response_framing`, and tests/unit/test_response_parser.py holds every codec to the same
answers.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Protocol

from edgeproxy.errors import ConfigError
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

    def reset(self, request_method: bytes) -> None: ...

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...

    def reusable(self) -> bool:
        """Complete, keep-alive, and no byte beyond it: the connection may serve again."""
        ...

    def close(self) -> None:
        """The connection is gone: drop what the parser holds (and any reference cycle
        through it, so that the connection is freed at once rather than by the GC)."""
        ...


class HeadCodec(Protocol):
    name: str
    # False when the parser itself refuses bare CR/LF, obs-fold and control characters
    # (llhttp does; h11 does not), so the reader can skip its own scan of complete heads.
    # tests/unit/test_reader.py holds every codec to the same answers either way.
    needs_raw_checks: bool

    def parse_request_head(self, head: bytes) -> RequestHead: ...

    def response_parser(self) -> ResponseParser:
        """A parser for the responses of one upstream connection."""
        ...


def _h11() -> HeadCodec:
    from edgeproxy.http.h11_codec import H11Codec

    return H11Codec()


def _httptools() -> HeadCodec:
    from edgeproxy.http.httptools_codec import HttptoolsCodec

    return HttptoolsCodec()


# Name -> factory, for the codecs importable here. `auto` picks the first of AUTO_ORDER.
CODECS: dict[str, Callable[[], HeadCodec]] = {"h11": _h11}
if importlib.util.find_spec("httptools") is not None:
    CODECS["httptools"] = _httptools
AUTO_ORDER = ("httptools", "h11")


def resolve_codec(name: str) -> HeadCodec:
    """The codec for an `http_parser` setting; ConfigError if it is not available."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            if candidate in CODECS:
                return CODECS[candidate]()
    factory = CODECS.get(name)
    if factory is None:
        available = ", ".join(sorted(CODECS))
        raise ConfigError("http_parser", f"codec {name!r} is not installed (have: {available})")
    return factory()

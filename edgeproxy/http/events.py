"""Neutral message heads that every codec produces; the proxy logic only sees these.

Header names are lowercased bytes, values are bytes with surrounding whitespace removed, in
the order received. Bodies are not codec business: `edgeproxy.http.framing` frames them the
same way whichever codec parsed the head.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers
    # Filled in by the shared validation in edgeproxy.http.reader, never by a codec:
    host: bytes = b""
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    version: bytes
    headers: Headers
    # Filled in by edgeproxy.http.reader:
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True


class EndOfMessage:
    """Marks the end of a message body (singleton END_OF_MESSAGE)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


class NeedData:
    """The reader has nothing more until more bytes are fed (singleton NEED_DATA)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


END_OF_MESSAGE = EndOfMessage()
NEED_DATA = NeedData()

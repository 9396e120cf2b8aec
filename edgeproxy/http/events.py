"""Neutral message heads that every codec produces; the proxy logic only sees these.

Header names are lowercased bytes, values are bytes with surrounding whitespace removed, in
the order received. A response head also keeps the names as the upstream spelled them
(`spelled`), which is how they are passed on to the client, as nginx does. Bodies are not
codec business: `edgeproxy.http.framing` frames them the same way whichever codec parsed
the head.
"""

from __future__ import annotations

from typing import Final

Headers = list[tuple[bytes, bytes]]


# Plain classes rather than dataclasses: one is built per message, and the compiled build
# makes an explicit __init__ native, where a dataclass's generated one stays interpreted.


class RequestHead:
    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
        "spelled",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers,
        spelled: Headers | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version  # b"1.1" or b"1.0"
        self.headers = headers  # lowercased names, for every lookup
        # The same fields with the names as the client spelled them (passed on upstream
        # that way, as nginx does); None when not known (then `headers` serve).
        self.spelled = spelled
        # Filled in by the shared validation in edgeproxy.http.reader, never by a codec:
        self.host = b""
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade = False  # a WebSocket upgrade, to be tunnelled after the peer's 101

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r}, {self.target!r}, {self.version!r}, {self.headers!r})"


class ResponseHead:
    __slots__ = (
        "chunked",
        "content_length",
        "headers",
        "keep_alive",
        "reason",
        "spelled",
        "status",
        "version",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: Headers,
        spelled: Headers | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # lowercased names, for every lookup
        # The same fields (same value objects, same order) with the names as received;
        # None when they were received lowercased, or the head was not received at all.
        self.spelled = spelled
        # Filled in by edgeproxy.http.response_reader.response_framing:
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True

    def __repr__(self) -> str:
        return f"ResponseHead({self.status}, {self.reason!r}, {self.version!r}, {self.headers!r})"


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


END_OF_MESSAGE: Final = EndOfMessage()
NEED_DATA: Final = NeedData()

"""The table of codecs, chosen by `http_parser`.

The codec interface (HeadCodec, ResponseParser, MalformedResponse) lives in
edgeproxy.http.interface, which the codecs import; it is re-exported here for callers that
take a codec from this table.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from edgeproxy.errors import ConfigError
from edgeproxy.http.interface import HeadCodec, MalformedResponse, ResponseParser

__all__ = [
    "AUTO_ORDER",
    "CODECS",
    "HeadCodec",
    "MalformedResponse",
    "ResponseParser",
    "resolve_codec",
]


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

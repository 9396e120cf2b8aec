"""The table of upstream protocols, chosen by an upstream's `protocol:` key."""

from __future__ import annotations

from collections.abc import Callable

from edgeproxy.http.codec import HeadCodec
from edgeproxy.upstream.http1 import Http1Protocol
from edgeproxy.upstream.protocol import UpstreamProtocol

# name -> factory given the worker's codec. `uwsgi` is refused by the config check until
# its encoder is built.
PROTOCOLS: dict[str, Callable[[HeadCodec], UpstreamProtocol]] = {"http": Http1Protocol}


def make_protocol(name: str, codec: HeadCodec) -> UpstreamProtocol:
    return PROTOCOLS[name](codec)

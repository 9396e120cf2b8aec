"""The table of upstream protocols, chosen by an upstream's `protocol:` key."""

from __future__ import annotations

from collections.abc import Callable

from edgeproxy.http.codec import HeadCodec
from edgeproxy.upstream.http1 import Http1Protocol
from edgeproxy.upstream.protocol import UpstreamProtocol
from edgeproxy.upstream.uwsgi import UwsgiProtocol

# name -> factory given the worker's codec.
PROTOCOLS: dict[str, Callable[[HeadCodec], UpstreamProtocol]] = {
    "http": Http1Protocol,
    "uwsgi": UwsgiProtocol,
}


def make_protocol(name: str, codec: HeadCodec) -> UpstreamProtocol:
    return PROTOCOLS[name](codec)

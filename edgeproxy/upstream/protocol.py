"""What a pool speaks to its peers: request encoding, response parsing, the reuse rule.

An upstream pool holds one protocol object, chosen by `protocol:` from PROTOCOLS
(edgeproxy.upstream.protocols). The proxy handler builds the request through it and the
connection reads responses with its parser, so a second wire format (uwsgi) is one more
class here and one more row in that table; retries and balancing do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edgeproxy.http.codec import ResponseParser
from edgeproxy.http.events import RequestHead


class UpstreamProtocol(Protocol):
    name: str

    def encode_request_head(
        self,
        head: RequestHead,
        default_host: bytes,  # Host to send when the client sent none (HTTP/1.0)
        peer_ip: str,  # the TCP peer of the client connection
        client_ip: str,  # the client as the request phases resolved it
        body_size: int,
        keepalive: bool,  # whether the connection may be reused after this request
        ports: Callable[[], tuple[int, int]],  # (listening port, client's port); 0 for unix
        scheme: bytes,  # b"https" when the client came over TLS, else b"http"
        request_id: bytes,  # sent as X-Request-ID
    ) -> bytes:
        """Everything sent before the body's bytes (the body goes as it is, after this).

        Raises UpstreamError when the request cannot be put in this protocol's terms (it
        is then answered with the error's status, no peer tried). `ports` costs a system
        call or two: call it only when the protocol sends them.
        """
        ...

    def response_parser(self) -> ResponseParser:
        """A parser for the responses of one connection; its `reusable()` is the reuse rule."""
        ...

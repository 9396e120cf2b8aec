"""The request path's vocabulary: a complete request, the route it took, and the three
interfaces that plug into it.

- a **Handler** answers a request (proxy_pass, return, static files); after a 101 it may
  hand the client connection over to another protocol (`Client.hand_over`: a tunnel);
- a **RequestPhase** runs before the handler, in a declared order, and may answer on its
  own or delay the handler (client address, access rules, rate limits);
- a **ConnectionPhase** runs when a connection is accepted and when it ends (connection
  limits).

They live in one module because they refer to each other (a handler takes a Request, a
Request holds its Route, a Route holds its handler and phases). The connection
(edgeproxy.server.connection) drives them and knows nothing of what they do; the tables
that build them from the config are in edgeproxy.server.routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from edgeproxy.config.model import Location, ServerConfig
from edgeproxy.http.events import RequestHead
from edgeproxy.logging.formats import Attempt
from edgeproxy.metrics.recorder import RequestStats
from edgeproxy.server.body import RequestBody
from edgeproxy.server.response import Answer, ResponseWriter

_monotonic: Final = time.monotonic  # a Final: no module attribute lookup per call
# Response fields a phase adds: name and value, as written.
Fields = Sequence[tuple[bytes, bytes]]


class Client(Protocol):
    """What a handler may do with the client connection it answers."""

    out: ResponseWriter

    def handler_done(self) -> None:
        """The response is completely written (call once, never from within `start`)."""

    def abort(self) -> None:
        """Drop the connection: part of a response went out and the rest cannot follow."""

    def ports(self) -> tuple[int, int]:
        """The port the client connected to and the client's own (0 for unix sockets);
        a system call or two, so only asked for by what needs them (uwsgi's variables)."""
        ...

    def hand_over(self, protocol: asyncio.Protocol) -> Callable[[], None]:
        """After a 101 written whole, instead of `handler_done`: `protocol` owns the
        client's transport from now on (it hears `connection_made`, then the bytes the
        client sent past the request). Returns what `protocol` must call once its
        connection is lost (edgeproxy.server.connection says what that releases)."""
        ...


class Responder(Protocol):
    """A response in progress, told what happens on the client's side."""

    def on_client_writable(self) -> None:
        """The client took what was written: more may follow."""

    def on_client_full(self) -> None:
        """The client is not taking the response: hold what follows (`out.writable` is False)."""

    def client_gone(self) -> None:
        """The connection closed: stop, release everything, do not call `handler_done`."""


class Handler(Protocol):
    """A location's handler, built once per config (edgeproxy.server.routes.HANDLERS)."""

    def start(self, request: Request, client: Client) -> Responder | None:
        """Begin answering `request` on `client.out`.

        Return None when the response was completely written in this call; otherwise the
        Responder, which calls `client.handler_done()` once its response is complete.
        """
        ...


class Delay:
    """A phase's verdict: run the handler only after this many seconds, and add `headers`
    to its response (a rate limit's RateLimit fields, say)."""

    __slots__ = ("headers", "seconds")

    def __init__(self, seconds: float, headers: Fields = ()) -> None:
        self.seconds = seconds
        self.headers = headers


# What a request phase decides: None = go on, an Answer = respond with it instead of the
# handler (the remaining phases are skipped), a Delay = go on, but start the handler later.
Verdict = Answer | Delay | None


class RequestPhase(Protocol):
    """A check that runs once the request head is parsed, before its body is read."""

    name: str  # for the error log when it answers

    def check(self, request: Request) -> Verdict: ...


class ConnectionPhase(Protocol):
    """A check on each accepted connection, before anything is read from it."""

    name: str

    def accept(self, peer_ip: str) -> Answer | None:
        """None to let the connection in (then `release` follows when it ends), or the
        answer to refuse it with."""
        ...

    def release(self, peer_ip: str) -> None:
        """An accepted connection ended, however it ended."""


class Route:
    """Where a request goes: its virtual server, location, phases and handler."""

    __slots__ = ("default_host", "handler", "location", "metrics", "phases", "scheme", "server")

    def __init__(
        self,
        server: ServerConfig,
        location: Location | None,  # None: no location matched (the 404 route)
        handler: Handler,
        phases: tuple[RequestPhase, ...],
        default_host: bytes,  # Host sent upstream for an HTTP/1.0 request without one
    ) -> None:
        self.server = server
        self.location = location
        self.handler = handler
        self.phases = phases
        self.default_host = default_host
        # A TLS server's every address speaks TLS (and no plain server shares one).
        self.scheme = b"https" if server.tls is not None else b"http"
        self.metrics: RequestStats | None = None  # set where the worker counts metrics


class Request:
    # A plain class, not a dataclass: see edgeproxy.http.events (one is built per request).
    __slots__ = (
        "added_headers",
        "answer",
        "body",
        "client_ip",
        "client_ip_source",
        "delay",
        "head",
        "peer_ip",
        "request_id",
        "route",
        "started",
        "timed",
        "upstream_addr",
        "upstream_connect_time",
        "upstream_earlier",
        "upstream_header_time",
        "upstream_response_time",
        "upstream_started",
        "upstream_status",
    )

    def __init__(
        self,
        head: RequestHead,
        route: Route,
        body: RequestBody,
        peer_ip: str,  # the TCP peer (or the client a PROXY header named)
        started: float,  # wall clock, for the access log
        request_id: bytes = b"",  # sent upstream and to the client (X-Request-ID)
        peer_source: str = "peer",  # how peer_ip was learnt: peer | proxy_protocol
        timed: bool = False,  # measure the upstream's times (for the access log)
    ) -> None:
        self.head = head
        self.route = route
        self.body = body
        self.peer_ip = peer_ip
        # The peer, unless a phase names the real client (trusted proxies, PROXY protocol).
        self.client_ip = peer_ip
        self.client_ip_source = peer_source  # "xff" once a trusted proxy named the client
        self.request_id = request_id
        self.started = started
        self.answer: Answer | None = None  # a phase's answer, given instead of the handler
        self.delay = 0.0  # seconds the phases asked the handler to wait
        self.added_headers: Fields = ()  # fields the phases add to the response
        # For the access log: the attempt that answered (or the last one tried) ...
        self.upstream_addr = ""
        self.upstream_status = 0
        self.timed = timed  # without it no clock is read: the times stay -1.0
        self.upstream_started = 0.0  # monotonic clock at the attempt's start
        self.upstream_connect_time = -1.0
        self.upstream_header_time = -1.0
        self.upstream_response_time = -1.0
        # ... and the attempts before it, in order (None: there were none).
        self.upstream_earlier: list[Attempt] | None = None

    # --- an upstream attempt's milestones, measured from its start (as nginx's) ---

    def upstream_try(self, addr: str, now: float = 0.0) -> None:
        """A peer is chosen: a new attempt begins (the previous one is kept for the log).
        `now`: the monotonic clock read for the metrics at this moment, if it was (0.0)."""
        if self.upstream_addr:
            attempt = (self.upstream_addr, self.upstream_status, self.upstream_connect_time,
                       self.upstream_header_time, self.upstream_response_time)  # fmt: skip
            if self.upstream_earlier is None:
                self.upstream_earlier = [attempt]
            else:
                self.upstream_earlier.append(attempt)
            self.upstream_status = 0
            self.upstream_connect_time = -1.0
            self.upstream_header_time = -1.0
            self.upstream_response_time = -1.0
        self.upstream_addr = addr
        if self.timed:
            self.upstream_started = now or _monotonic()

    def upstream_connected(self, at_once: bool) -> None:
        """The request is on its way; `at_once`: on an idle connection, no time spent."""
        if self.timed:
            self.upstream_connect_time = 0.0 if at_once else _monotonic() - self.upstream_started

    def upstream_head(self) -> None:
        if self.timed:
            self.upstream_header_time = _monotonic() - self.upstream_started

    def upstream_ended(self, now: float = 0.0) -> None:
        """The attempt is over (response complete, failed, or given up on); once only.
        `now`: as for `upstream_try`."""
        if self.timed and self.upstream_response_time < 0 and self.upstream_addr:
            self.upstream_response_time = (now or _monotonic()) - self.upstream_started

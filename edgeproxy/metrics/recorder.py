"""What the request path calls: one small object per route, peer and zone, built once per
config (edgeproxy.metrics.binding), each holding its worker's row and the integer offsets
of its slots. A call is one event (a request finished, a peer responded ...) and adds its
counts straight into shared memory: no lookup by name, no string, no lock (each worker
writes only its own row), and nothing held back (a worker killed with SIGKILL has lost
nothing it counted).

Two implementations of the protocols below, one chosen per worker (binding.py):
- edgeproxy.metrics._rowstats, a small C module built with the compiled build: one C call
  per event, doubles added in place, the clock read in C;
- the Shadow* classes here, the pure-Python fallback. Each keeps every count also in
  `shadow`, a plain list private to the worker: a worker is the only writer of its row,
  so the shared slot is always shadow's value, and a count is one store into shared
  memory (a memoryview read costs as much as the store again).

Clocks: a request's time is measured from its wall clock start (`Request.started`, which
the access log prints too); an upstream attempt's on the monotonic clock, whose readings
`attempt` and `responded` return so that the access log's upstream times reuse them.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

# Histogram buckets (seconds; Prometheus client libraries' defaults), then +Inf: for the
# layout and the text format; `bucket` below writes them out (a unit test checks both
# agree). Not Final: the compiled build left a Final tuple here unset.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SUM_SLOT: Final = 12  # the sum's slot: after the buckets and +Inf (a unit test checks it)
_wall_clock: Final = time.time  # Finals: no module attribute lookup per call
_monotonic: Final = time.monotonic


def bucket(seconds: float) -> int:
    """The histogram slot of an observation: the first bound it does not exceed, else +Inf
    (buckets are not cumulative here: the scrape adds them up). Comparisons written out:
    compiled, they are a few machine instructions, where a loop over a tuple boxes each
    bound."""
    if seconds <= 0.1:
        if seconds <= 0.01:
            return 0 if seconds <= 0.005 else 1
        if seconds <= 0.025:
            return 2
        return 3 if seconds <= 0.05 else 4
    if seconds <= 1.0:
        if seconds <= 0.25:
            return 5
        return 6 if seconds <= 0.5 else 7
    if seconds <= 2.5:
        return 8
    if seconds <= 5.0:
        return 9
    return 10 if seconds <= 10.0 else 11


class Traffic(Protocol):
    def received(self, size: int, /) -> None:
        """Bytes read from a client (every connection, after TLS)."""


class RequestStats(Protocol):
    def finished(self, status: int, started: float, body_bytes: int, /) -> None:
        """A request is answered: `started` is its wall clock start (time.time())."""


class PeerStats(Protocol):
    def attempt(self, retry: bool, /) -> float:
        """A request goes to this peer (`retry`: not its first try); the monotonic time
        now, for `responded` and the access log."""
        ...

    def failed(self) -> None: ...

    def responded(self, started: float, /) -> float:
        """The peer's response is complete (`started`: what `attempt` returned); the
        monotonic time now."""
        ...

    def in_flight(self, active: int, /) -> None:
        """The requests in flight to this peer (a gauge, set at the heartbeat)."""


class ZoneStats(Protocol):
    def rejected(self) -> None: ...

    def delayed(self) -> None: ...


# --- the pure-Python fallback ---


class ShadowTraffic:
    """Bytes read from clients (every connection, after TLS) and response body bytes."""

    __slots__ = ("base", "row", "shadow")

    def __init__(self, row: memoryview[float], shadow: list[float], base: int) -> None:
        self.row = row
        self.shadow = shadow
        self.base = base

    def received(self, size: int, /) -> None:
        i = self.base
        value = self.shadow[i] + size
        self.shadow[i] = value
        self.row[i] = value


class ShadowRequestStats:
    """A route's requests by status class, its server's request times, the bytes sent."""

    __slots__ = ("row", "shadow", "status", "time", "traffic")

    def __init__(
        self, row: memoryview[float], shadow: list[float], status: int, time_base: int,
        traffic: int,
    ) -> None:  # fmt: skip
        self.row = row
        self.shadow = shadow
        self.status = status  # the 1xx slot; 2xx .. 5xx follow
        self.time = time_base
        self.traffic = traffic

    def finished(self, status: int, started: float, body_bytes: int, /) -> None:
        row = self.row
        shadow = self.shadow
        klass = status // 100
        if klass < 1 or klass > 5:
            klass = 5
        i = self.status + klass - 1
        value = shadow[i] + 1.0
        shadow[i] = value
        row[i] = value
        seconds = _wall_clock() - started
        i = self.time + bucket(seconds)
        value = shadow[i] + 1.0
        shadow[i] = value
        row[i] = value
        i = self.time + SUM_SLOT
        value = shadow[i] + seconds
        shadow[i] = value
        row[i] = value
        i = self.traffic + 1
        value = shadow[i] + body_bytes
        shadow[i] = value
        row[i] = value


class ShadowPeerStats:
    """A peer's requests, failures and retries, and its pool's upstream response times."""

    __slots__ = ("base", "row", "shadow", "time")

    def __init__(
        self, row: memoryview[float], shadow: list[float], base: int, time_base: int
    ) -> None:
        self.row = row
        self.shadow = shadow
        self.base = base
        self.time = time_base

    def _add(self, i: int, amount: float) -> None:
        value = self.shadow[i] + amount
        self.shadow[i] = value
        self.row[i] = value

    def attempt(self, retry: bool, /) -> float:
        self._add(self.base, 1.0)
        if retry:
            self._add(self.base + 2, 1.0)
        return _monotonic()

    def failed(self) -> None:
        self._add(self.base + 1, 1.0)

    def responded(self, started: float, /) -> float:
        now = _monotonic()
        seconds = now - started
        self._add(self.time + bucket(seconds), 1.0)
        self._add(self.time + SUM_SLOT, seconds)
        return now

    def in_flight(self, active: int, /) -> None:
        self.row[self.base + 3] = active  # a gauge: not a count, so not in shadow


class ShadowZoneStats:
    """A limit zone's refusals and delays."""

    __slots__ = ("base", "row", "shadow")

    def __init__(self, row: memoryview[float], shadow: list[float], base: int) -> None:
        self.row = row
        self.shadow = shadow
        self.base = base

    def _add(self, i: int) -> None:
        value = self.shadow[i] + 1.0
        self.shadow[i] = value
        self.row[i] = value

    def rejected(self) -> None:
        self._add(self.base)

    def delayed(self) -> None:
        self._add(self.base + 1)

"""What the request path calls: one small object per route, peer and zone, built once per
config (edgeproxy.metrics.binding), each holding its worker's row and the integer offsets
of its slots. A call is a few float additions into shared memory: no lookup by name, no
string, no lock (each worker writes only its own row).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Final

# Histogram buckets (seconds; Prometheus client libraries' defaults), then +Inf. Not
# Final: the compiled build left this Final tuple unset (a NameError at its first read),
# so it costs one module-dict lookup per observation.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SUM_SLOT: Final = 12  # the sum's slot: after the buckets and +Inf (a unit test checks it)


def _observe(row: memoryview[float], base: int, seconds: float) -> None:
    """One histogram observation: the first bucket it fits (bisect_left: the first bound
    >= seconds, or +Inf; buckets are not cumulative here, the scrape adds them up), and
    the sum."""
    row[base + bisect_left(BUCKETS, seconds)] += 1.0
    row[base + SUM_SLOT] += seconds


class Traffic:
    """Bytes read from clients (every connection, after TLS) and response body bytes."""

    __slots__ = ("base", "row")

    def __init__(self, row: memoryview[float], base: int) -> None:
        self.row = row
        self.base = base

    def received(self, size: int) -> None:
        self.row[self.base] += size


class RequestStats:
    """A route's requests by status class, its server's request times, the bytes sent."""

    __slots__ = ("row", "status", "time", "traffic")

    def __init__(self, row: memoryview[float], status: int, time_base: int, traffic: int) -> None:
        self.row = row
        self.status = status  # the 1xx slot; 2xx .. 5xx follow
        self.time = time_base
        self.traffic = traffic

    def finished(self, status: int, started: float, body_bytes: int) -> None:
        row = self.row
        klass = status // 100
        if klass < 1 or klass > 5:
            klass = 5
        row[self.status + klass - 1] += 1.0
        seconds = time.time() - started
        row[self.time + bisect_left(BUCKETS, seconds)] += 1.0
        row[self.time + SUM_SLOT] += seconds
        row[self.traffic + 1] += body_bytes


class PeerStats:
    """A peer's requests, failures and retries, and its pool's upstream response times."""

    __slots__ = ("base", "row", "time")

    def __init__(self, row: memoryview[float], base: int, time_base: int) -> None:
        self.row = row
        self.base = base
        self.time = time_base

    def attempt(self, retry: bool) -> float:
        """A request goes to this peer (`retry`: not its first try); when it started."""
        row = self.row
        row[self.base] += 1.0
        if retry:
            row[self.base + 2] += 1.0
        return time.time()

    def failed(self) -> None:
        self.row[self.base + 1] += 1.0

    def responded(self, started: float) -> None:
        """The peer's response is complete (`started`: what `attempt` returned)."""
        _observe(self.row, self.time, time.time() - started)


class ZoneStats:
    """A limit zone's refusals and delays."""

    __slots__ = ("base", "row")

    def __init__(self, row: memoryview[float], base: int) -> None:
        self.row = row
        self.base = base

    def rejected(self) -> None:
        self.row[self.base] += 1.0

    def delayed(self) -> None:
        self.row[self.base + 1] += 1.0

"""Which series a config has, and where each group of them lives in a worker's row.

Series come in groups known at config time (a route's five status classes, a server's
request-time histogram, a peer's counters...), so each group gets a block of consecutive
slots once per config and the request path adds to `row[base + i]`, never looks a name up.
The registry lives in the master and reaches every worker and the exporter through fork.
A group keeps its block for as long as any live worker's config names it, so a reload
keeps the counts of every series it keeps; a block no live config names is cleared and
reused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Final

from edgeproxy.config.model import Config, Location, ServerConfig
from edgeproxy.metrics.recorder import BUCKETS

log = logging.getLogger("edgeproxy.master")

HISTOGRAM_SLOTS: Final = len(BUCKETS) + 2  # one per bucket, +Inf, the sum

# Group kinds: (kind, labels) names a group; SIZES and GAUGES say how its block is used.
TRAFFIC: Final = "traffic"  # bytes received from clients, response body bytes sent
CONNECTIONS: Final = "connections"  # active, reading, writing, idle (gauges)
REQUESTS: Final = "requests"  # (server, location): 1xx .. 5xx
REQUEST_TIME: Final = "request_time"  # (server,): histogram
UPSTREAM_TIME: Final = "upstream_time"  # (upstream,): histogram
QUEUE: Final = "queue"  # (upstream,): requests waiting for a max_conns place (gauge)
PEER: Final = "peer"  # (upstream, peer): requests, failures, retries, in flight (gauge)
ZONE: Final = "zone"  # (zone,): rejected, delayed

SIZES: Final = {
    TRAFFIC: 2,
    CONNECTIONS: 4,
    REQUESTS: 5,
    REQUEST_TIME: HISTOGRAM_SLOTS,
    UPSTREAM_TIME: HISTOGRAM_SLOTS,
    QUEUE: 1,
    PEER: 4,
    ZONE: 2,
}
GAUGES: Final = {CONNECTIONS: (0, 1, 2, 3), QUEUE: (0,), PEER: (3,)}
# Slots 0 .. SINK-1 take the counts of groups that found no room (never exported).
SINK: Final = max(SIZES.values())

GroupKey = tuple[str, tuple[str, ...]]


def server_label(server: ServerConfig) -> str:
    """Its first name, else its first listen address (servers sharing one are summed)."""
    names = [name for name in server.server_name if name != "_"]
    if names:
        return names[0]
    return str(server.listen[0]) if server.listen else server.where


def location_label(location: Location | None) -> str:
    """As written in the config: `/api/`, `= /exact`, `~ regex`; "" when none matched."""
    if location is None:
        return ""
    if location.match == "exact":
        return f"= {location.pattern}"
    if location.match == "regex":
        return f"~ {location.pattern}"
    return location.pattern


def groups(config: Config) -> Iterator[GroupKey]:
    """Every group of `config`, in the order the scrape shows them."""
    yield TRAFFIC, ()
    yield CONNECTIONS, ()
    for server in config.servers:
        label = server_label(server)
        yield REQUEST_TIME, (label,)
        yield REQUESTS, (label, "")
        for location in server.locations:
            yield REQUESTS, (label, location_label(location))
    for upstream in config.upstreams.values():
        yield UPSTREAM_TIME, (upstream.name,)
        yield QUEUE, (upstream.name,)
        for peer in upstream.servers:
            yield PEER, (upstream.name, str(peer.address))
    for zone in config.limits.values():
        yield ZONE, (zone.name,)


class SeriesRegistry:
    """Group -> base slot, kept by the master (workers and the exporter get it by fork)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bases: dict[GroupKey, int] = {}
        self._free: dict[int, list[int]] = {}  # size -> freed bases, reused first
        self.high = SINK  # slots in use end here
        self.gauge = bytearray(capacity)  # 1 where a slot holds a gauge (not folded)
        self._warned = False

    def base(self, key: GroupKey) -> int:
        """Where `key`'s block starts; the sink when it has none."""
        return self.bases.get(key, 0)

    def assign(self, config: Config) -> None:
        """A block for every group of `config`, keeping the blocks of known groups."""
        for key in groups(config):
            if key in self.bases:
                continue
            kind = key[0]
            size = SIZES[kind]
            free = self._free.get(size)
            if free:
                base = free.pop()
            elif self.high + size <= self.capacity:
                base = self.high
                self.high += size
            else:
                if not self._warned:
                    log.warning("metrics: no room for more than %d series; the others are "
                                "not counted", self.high)  # fmt: skip
                    self._warned = True
                continue
            self.bases[key] = base
            flags = GAUGES.get(kind, ())
            for i in range(size):
                self.gauge[base + i] = 1 if i in flags else 0

    def retain(self, configs: Iterable[Config]) -> list[tuple[int, int]]:
        """Free the blocks no config of `configs` (those of live workers) names; returns
        them as (base, size), for the store to clear."""
        keep = {key for config in configs for key in groups(config)}
        freed = []
        for key in [k for k in self.bases if k not in keep]:
            base = self.bases.pop(key)
            size = SIZES[key[0]]
            self._free.setdefault(size, []).append(base)
            freed.append((base, size))
        return freed

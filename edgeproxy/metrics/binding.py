"""A worker's recorders: built once per config from its row and the master's registry.

The recorders are the C ones (edgeproxy.metrics._rowstats, built with the compiled build)
where that module exists, else the pure-Python Shadow* ones (edgeproxy.metrics.recorder):
one kind per process, chosen at import as the zones' lock is (edgeproxy.limits.locks).
"""

from __future__ import annotations

from edgeproxy.config.model import Location, ServerConfig
from edgeproxy.metrics.layout import (
    CONNECTIONS,
    PEER,
    QUEUE,
    REQUEST_TIME,
    REQUESTS,
    TRAFFIC,
    UPSTREAM_TIME,
    ZONE,
    SeriesRegistry,
    location_label,
    server_label,
)
from edgeproxy.metrics.recorder import (
    PeerStats,
    RequestStats,
    ShadowPeerStats,
    ShadowRequestStats,
    ShadowTraffic,
    ShadowZoneStats,
    Traffic,
    ZoneStats,
)

try:
    from edgeproxy.metrics import _rowstats
except ImportError:  # a pure-Python install: no C compiler built it
    HAVE_C_RECORDERS = False
else:
    HAVE_C_RECORDERS = True


def recorder_kind() -> str:
    """The kind of recorders this process makes: "c" or "shadow" (pure Python)."""
    return "c" if HAVE_C_RECORDERS else "shadow"


class WorkerMetrics:
    def __init__(
        self, row: memoryview[float], registry: SeriesRegistry, kind: str | None = None
    ) -> None:
        self.kind = kind or recorder_kind()
        if self.kind not in ("c", "shadow") or (self.kind == "c" and not HAVE_C_RECORDERS):
            raise ValueError(
                f"no {self.kind!r} recorders here (this install has {recorder_kind()!r})"
            )
        self.row = row
        # The Python recorders' own copy of the worker's counters (see
        # edgeproxy.metrics.recorder): the row starts cleared (the master cleared it before
        # the fork), and so does this. The C recorders need none.
        self.shadow = [0.0] * len(row) if self.kind == "shadow" else []
        self.registry = registry
        self._traffic = registry.base((TRAFFIC, ()))
        self.traffic: Traffic = (
            _rowstats.TrafficCounter(row, self._traffic)
            if self.kind == "c"
            else ShadowTraffic(row, self.shadow, self._traffic)
        )
        self._connections = registry.base((CONNECTIONS, ()))
        self._zones: dict[str, ZoneStats] = {}

    def route(self, server: ServerConfig, location: Location | None) -> RequestStats:
        label = server_label(server)
        status = self.registry.base((REQUESTS, (label, location_label(location))))
        time_base = self.registry.base((REQUEST_TIME, (label,)))
        if self.kind == "c":
            return _rowstats.RequestCounter(self.row, status, time_base, self._traffic)
        return ShadowRequestStats(self.row, self.shadow, status, time_base, self._traffic)

    def peer(self, upstream: str, peer: str) -> PeerStats:
        base = self.registry.base((PEER, (upstream, peer)))
        time_base = self.registry.base((UPSTREAM_TIME, (upstream,)))
        if self.kind == "c":
            return _rowstats.PeerCounter(self.row, base, time_base)
        return ShadowPeerStats(self.row, self.shadow, base, time_base)

    def zone(self, name: str) -> ZoneStats:
        found = self._zones.get(name)
        if found is None:
            base = self.registry.base((ZONE, (name,)))
            found = self._zones[name] = (
                _rowstats.ZoneCounter(self.row, base)
                if self.kind == "c"
                else ShadowZoneStats(self.row, self.shadow, base)
            )
        return found

    # --- gauges, written now and then (the worker's heartbeat), not per request ---

    def set_connections(self, active: int, reading: int, writing: int, idle: int) -> None:
        row, base = self.row, self._connections
        row[base] = active
        row[base + 1] = reading
        row[base + 2] = writing
        row[base + 3] = idle

    def set_queue(self, upstream: str, waiting: int) -> None:
        self.row[self.registry.base((QUEUE, (upstream,)))] = waiting

    def set_in_flight(self, stats: PeerStats, active: int) -> None:
        stats.in_flight(active)

"""A worker's recorders: built once per config from its row and the master's registry."""

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
from edgeproxy.metrics.recorder import PeerStats, RequestStats, Traffic, ZoneStats


class WorkerMetrics:
    def __init__(self, row: memoryview[float], registry: SeriesRegistry) -> None:
        self.row = row
        # The worker's own copy of its counters (see edgeproxy.metrics.recorder): the row
        # starts cleared (the master cleared it before the fork), and so does this.
        self.shadow = [0.0] * len(row)
        self.registry = registry
        self.traffic = Traffic(row, self.shadow, registry.base((TRAFFIC, ())))
        self._connections = registry.base((CONNECTIONS, ()))
        self._zones: dict[str, ZoneStats] = {}

    def route(self, server: ServerConfig, location: Location | None) -> RequestStats:
        label = server_label(server)
        return RequestStats(
            self.row,
            self.shadow,
            self.registry.base((REQUESTS, (label, location_label(location)))),
            self.registry.base((REQUEST_TIME, (label,))),
            self.traffic.base,
        )

    def peer(self, upstream: str, peer: str) -> PeerStats:
        return PeerStats(
            self.row,
            self.shadow,
            self.registry.base((PEER, (upstream, peer))),
            self.registry.base((UPSTREAM_TIME, (upstream,))),
        )

    def zone(self, name: str) -> ZoneStats:
        found = self._zones.get(name)
        if found is None:
            found = self._zones[name] = ZoneStats(
                self.row, self.shadow, self.registry.base((ZONE, (name,)))
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
        self.row[stats.base + 3] = active

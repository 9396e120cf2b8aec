"""The Prometheus text format (version 0.0.4) of one scrape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeproxy.config.model import Config
from edgeproxy.metrics.layout import (
    CONNECTIONS,
    PEER,
    QUEUE,
    REQUEST_TIME,
    REQUESTS,
    TRAFFIC,
    UPSTREAM_TIME,
    ZONE,
    GroupKey,
    SeriesRegistry,
    groups,
)
from edgeproxy.metrics.recorder import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
CONNECTION_STATES = ("active", "reading", "writing", "idle")
# Whether a peer takes requests now (None: the peer has no shared health row).
HealthOf = Callable[[str, str], "bool | None"]


@dataclass(frozen=True, slots=True)
class Instance:
    """What the master counts, and what this build is."""

    workers: float
    reloads: float
    restarts: float
    reload_failures: float
    last_reload_ok: float  # 1.0 or 0.0
    loaded_at: float  # Unix time the running config was loaded (the start, or a reload)
    version: str
    build: str  # "compiled" or "pure Python"
    codec: str


# Every family: its type and its HELP line, in the order the scrape shows them.
FAMILIES: dict[str, tuple[str, str]] = {
    "edgeproxy_received_bytes_total": ("counter", "Bytes read from clients (after TLS)."),
    "edgeproxy_sent_body_bytes_total": ("counter", "Response body bytes sent to clients."),
    "edgeproxy_connections": (
        "gauge",
        "Client connections: open (active), reading a request, writing a response, idle.",
    ),
    "edgeproxy_requests_total": (
        "counter",
        "Requests answered, by server, location and status class.",
    ),
    "edgeproxy_request_duration_seconds": (
        "histogram",
        "Time from a request's head to its last response byte.",
    ),
    "edgeproxy_upstream_response_duration_seconds": (
        "histogram",
        "Time from choosing a peer to its complete response.",
    ),
    "edgeproxy_upstream_queue_length": ("gauge", "Requests waiting for a max_conns place."),
    "edgeproxy_upstream_peer_requests_total": ("counter", "Requests sent to a peer."),
    "edgeproxy_upstream_peer_failures_total": (
        "counter",
        "Failed attempts on a peer (errors, timeouts, retried 50x).",
    ),
    "edgeproxy_upstream_peer_retries_total": (
        "counter",
        "Requests a peer got after another try failed.",
    ),
    "edgeproxy_upstream_peer_in_flight": ("gauge", "Requests on a peer now."),
    "edgeproxy_upstream_peer_up": (
        "gauge",
        "1 while a peer takes requests (not failed, marked down or failing its health "
        "checks), else 0.",
    ),
    "edgeproxy_limit_rejected_total": (
        "counter",
        "Requests or connections refused by a limit zone.",
    ),
    "edgeproxy_limit_delayed_total": ("counter", "Requests delayed by a limit zone."),
    "edgeproxy_workers": ("gauge", "Worker processes running."),
    "edgeproxy_reloads_total": ("counter", "Configuration reloads completed."),
    "edgeproxy_reload_failures_total": (
        "counter",
        "Configuration reloads refused (invalid config, or its workers did not start).",
    ),
    "edgeproxy_config_last_reload_successful": (
        "gauge",
        "1 if the last configuration reload (or the start) succeeded, else 0.",
    ),
    "edgeproxy_config_last_reload_success_timestamp_seconds": (
        "gauge",
        "Unix time the running configuration was loaded (at the start or a reload).",
    ),
    "edgeproxy_worker_restarts_total": ("counter", "Workers that died and were started again."),
    "edgeproxy_build_info": ("gauge", "This edgeproxy: version, build, HTTP codec."),
}
PEER_FAMILIES = (
    "edgeproxy_upstream_peer_requests_total",
    "edgeproxy_upstream_peer_failures_total",
    "edgeproxy_upstream_peer_retries_total",
    "edgeproxy_upstream_peer_in_flight",
)
Labels = list[tuple[str, str]]


class _Samples:
    """Sample lines by family; each family is written once, with its HELP and TYPE."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {family: [] for family in FAMILIES}

    def add(self, family: str, labels: Labels, value: float, suffix: str = "") -> None:
        self._lines[family].append(f"{family}{suffix}{_labels(labels)} {_number(value)}")

    def histogram(self, family: str, labels: Labels, values: list[float], base: int) -> None:
        total = 0.0
        for i, bound in enumerate(BUCKETS):
            total += values[base + i]
            self.add(family, [*labels, ("le", repr(bound))], total, "_bucket")
        total += values[base + len(BUCKETS)]
        self.add(family, [*labels, ("le", "+Inf")], total, "_bucket")
        self.add(family, labels, values[base + len(BUCKETS) + 1], "_sum")
        self.add(family, labels, total, "_count")

    def text(self) -> str:
        out: list[str] = []
        for family, lines in self._lines.items():
            if lines:
                kind, help_text = FAMILIES[family]
                out.append(f"# HELP {family} {help_text}")
                out.append(f"# TYPE {family} {kind}")
                out.extend(lines)
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _number(value: float) -> str:
    value = float(value)  # an int is a float to mypy, but has no is_integer before 3.12
    return str(int(value)) if value.is_integer() else repr(value)


def render(
    config: Config,
    registry: SeriesRegistry,
    values: list[float],
    health: HealthOf,
    instance: Instance,
) -> str:
    out = _Samples()
    seen: set[GroupKey] = set()
    for key in groups(config):
        base = registry.bases.get(key)
        if base is None or key in seen:  # no room for it, or a server label seen already
            continue
        seen.add(key)
        kind, names = key
        if kind == TRAFFIC:
            out.add("edgeproxy_received_bytes_total", [], values[base])
            out.add("edgeproxy_sent_body_bytes_total", [], values[base + 1])
        elif kind == CONNECTIONS:
            for i, state in enumerate(CONNECTION_STATES):
                out.add("edgeproxy_connections", [("state", state)], values[base + i])
        elif kind == REQUESTS:
            route = [("server", names[0]), ("location", names[1])]
            for i, status in enumerate(STATUS_CLASSES):
                out.add("edgeproxy_requests_total", [*route, ("status", status)], values[base + i])
        elif kind == REQUEST_TIME:
            out.histogram(
                "edgeproxy_request_duration_seconds", [("server", names[0])], values, base
            )
        elif kind == UPSTREAM_TIME:
            family = "edgeproxy_upstream_response_duration_seconds"
            out.histogram(family, [("upstream", names[0])], values, base)
        elif kind == QUEUE:
            out.add("edgeproxy_upstream_queue_length", [("upstream", names[0])], values[base])
        elif kind == PEER:
            labels = [("upstream", names[0]), ("peer", names[1])]
            for i, family in enumerate(PEER_FAMILIES):
                out.add(family, labels, values[base + i])
            up = health(names[0], names[1])
            if up is not None:
                out.add("edgeproxy_upstream_peer_up", labels, 1.0 if up else 0.0)
        elif kind == ZONE:
            out.add("edgeproxy_limit_rejected_total", [("zone", names[0])], values[base])
            out.add("edgeproxy_limit_delayed_total", [("zone", names[0])], values[base + 1])
    out.add("edgeproxy_workers", [], instance.workers)
    out.add("edgeproxy_reloads_total", [], instance.reloads)
    out.add("edgeproxy_reload_failures_total", [], instance.reload_failures)
    out.add("edgeproxy_config_last_reload_successful", [], instance.last_reload_ok)
    out.add("edgeproxy_config_last_reload_success_timestamp_seconds", [], instance.loaded_at)
    out.add("edgeproxy_worker_restarts_total", [], instance.restarts)
    build = [("version", instance.version), ("build", instance.build), ("codec", instance.codec)]
    out.add("edgeproxy_build_info", build, 1.0)
    return out.text()

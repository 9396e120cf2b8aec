"""The metrics' logic without sockets: series layout, the registry across reloads, the
shared rows (summing, folding a dead worker's row), the recorders and the text format."""

from __future__ import annotations

import itertools
import os
import time

from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.config import Config, parse_config
from edgeproxy.metrics.binding import WorkerMetrics
from edgeproxy.metrics.endpoint import Endpoint
from edgeproxy.metrics.exposition import Instance, render
from edgeproxy.metrics.layout import (
    HISTOGRAM_SLOTS,
    PEER,
    REQUEST_TIME,
    REQUESTS,
    SINK,
    SIZES,
    SeriesRegistry,
    groups,
)
from edgeproxy.metrics.recorder import BUCKETS, SUM_SLOT, bucket
from edgeproxy.metrics.store import SEQ, MetricsStore


def config(locations: str = "", servers: str = "", peers: str = '"127.0.0.1:8001"') -> Config:
    return parse_config(
        f"""
limits:
  per_ip: {{key: client_ip, rate: 10r/s}}
upstreams:
  app: {{servers: [{peers}]}}
servers:
  - listen: ["127.0.0.1:8080"]
    server_name: [site.test]
    locations:
      - {{exact: /healthz, return: {{status: 200}}}}
{locations}
      - {{path: /, proxy_pass: app}}
{servers}
""",
        "t.yaml",
    )


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


INSTANCE = Instance(2, 1, 0, 3, 0.0, 1796300000.5, "0.1.0", "pure Python", "h11")


def never_down(upstream: str, peer: str) -> bool | None:
    return True


# --- the registry ---


def test_every_group_gets_its_own_block() -> None:
    registry = SeriesRegistry(4096)
    first = config()
    registry.assign(first)
    spans = sorted((registry.bases[key], SIZES[key[0]]) for key in set(groups(first)))
    assert spans[0][0] == SINK  # the sink comes first and is nobody's
    for (base, size), (following, _) in itertools.pairwise(spans):
        assert base + size <= following
    peer = registry.base((PEER, ("app", "127.0.0.1:8001")))
    assert list(registry.gauge[peer : peer + 4]) == [0, 0, 0, 1]  # in flight is a gauge


def test_a_reload_keeps_the_blocks_of_the_series_it_keeps() -> None:
    registry = SeriesRegistry(4096)
    old = config()
    registry.assign(old)
    kept = dict(registry.bases)
    new = config(locations="      - {path: /new/, return: {status: 204}}")
    registry.assign(new)
    assert all(registry.bases[key] == base for key, base in kept.items())
    added = (REQUESTS, ("site.test", "/new/"))
    assert registry.bases[added] >= max(kept.values())

    # Once only `old` is live, the new location's block is freed, then reused.
    freed = registry.retain([old])
    assert [size for _, size in freed] == [SIZES[REQUESTS]]
    assert added not in registry.bases
    assert all(registry.bases[key] == base for key, base in kept.items())
    other = config(locations="      - {path: /other/, return: {status: 204}}")
    registry.assign(other)
    assert registry.bases[(REQUESTS, ("site.test", "/other/"))] == freed[0][0]


def test_groups_beyond_the_capacity_count_into_the_sink() -> None:
    registry = SeriesRegistry(SINK + 3)
    registry.assign(config())
    assert registry.base((REQUESTS, ("site.test", "/"))) == 0
    assert registry.high <= SINK + 3


# --- the shared rows ---


def store_for(cfg: Config, rows: int = 4) -> MetricsStore:
    store = MetricsStore(capacity=1024, rows=rows)
    store.registry.assign(cfg)
    return store


def worker(store: MetricsStore, row: int) -> WorkerMetrics:
    store.open_row(row)
    view = store.row(row)
    assert view is not None
    return WorkerMetrics(view, store.registry)


def routes_of(cfg: Config, metrics: WorkerMetrics) -> dict[str, object]:
    server = cfg.servers[0]
    return {loc.pattern: metrics.route(server, loc) for loc in server.locations}


def test_the_scrape_sums_the_rows_and_a_dead_workers_counts_stay() -> None:
    cfg = config()
    store = store_for(cfg)
    server = cfg.servers[0]
    one, two = worker(store, 0), worker(store, 1)
    root = server.locations[-1]
    started = time.time()
    for metrics, count in ((one, 3), (two, 4)):
        stats = metrics.route(server, root)
        for _ in range(count):
            stats.finished(200, started, 10)
    one.route(server, root).finished(502, started, 0)
    one.set_connections(5, 1, 1, 3)
    two.set_connections(2, 0, 2, 0)
    values = store.snapshot()
    assert values is not None
    base = store.registry.base((REQUESTS, ("site.test", "/")))
    assert values[base + 1] == 7 and values[base + 4] == 1
    samples = parse(render(cfg, store.registry, values, never_down, INSTANCE))
    assert samples[("edgeproxy_connections", (("state", "active"),))] == 7

    store.fold(0)  # worker 0 was reaped (SIGKILL or not): its counters stay, its gauges go
    assert store.fields[SEQ] % 2 == 0
    values = store.snapshot()
    assert values is not None
    assert values[base + 1] == 7 and values[base + 4] == 1
    samples = parse(render(cfg, store.registry, values, never_down, INSTANCE))
    assert samples[("edgeproxy_connections", (("state", "active"),))] == 2
    sent = samples[("edgeproxy_sent_body_bytes_total", ())]
    assert sent == 70

    # A new worker in the same row starts from zero; the sums go on from where they were.
    three = worker(store, 0)
    three.route(server, root).finished(204, started, 0)
    values = store.snapshot()
    assert values is not None and values[base + 1] == 8


def test_a_scrape_during_a_fold_reads_again() -> None:
    store = store_for(config())
    store.fields[SEQ] += 1  # the master is folding
    assert store.snapshot() is None
    assert store.snapshot(consistent=False) is not None
    store.fields[SEQ] += 1
    assert store.snapshot() is not None


def test_freed_blocks_are_cleared_everywhere() -> None:
    cfg = config(locations="      - {path: /gone/, return: {status: 204}}")
    store = store_for(cfg)
    metrics = worker(store, 0)
    server = cfg.servers[0]
    metrics.route(server, server.locations[1]).finished(204, time.time(), 0)
    store.fold(0)
    gone = store.registry.base((REQUESTS, ("site.test", "/gone/")))
    kept = store.registry.base((REQUEST_TIME, ("site.test",)))
    store.clear_blocks(store.registry.retain([config()]))
    values = store.snapshot()
    assert values is not None
    assert values[gone : gone + SIZES[REQUESTS]] == [0.0] * SIZES[REQUESTS]
    assert sum(values[kept : kept + len(BUCKETS) + 1]) == 1  # the server's series stays


def test_a_row_written_by_a_forked_child_is_seen_by_the_parent() -> None:
    cfg = config()
    store = store_for(cfg)
    metrics = worker(store, 2)
    stats = metrics.peer("app", "127.0.0.1:8001")
    pid = os.fork()
    if pid == 0:
        stats.attempt(False)
        stats.attempt(True)
        stats.failed()
        os._exit(0)
    os.waitpid(pid, 0)
    values = store.snapshot()
    assert values is not None
    assert values[stats.base : stats.base + 3] == [2.0, 1.0, 1.0]


def test_rows_beyond_the_store_are_not_scraped() -> None:
    store = store_for(config(), rows=2)
    assert store.row(2) is None
    store.open_row(5)
    store.fold(5)  # nothing to do, and no error


# --- the recorders ---


def test_histogram_buckets_and_status_classes() -> None:
    cfg = config()
    store = store_for(cfg)
    metrics = worker(store, 0)
    server = cfg.servers[0]
    stats = metrics.route(server, server.locations[0])
    now = time.time()
    stats.finished(101, now, 0)
    stats.finished(499, now - 0.3, 0)  # the client left: a 4xx
    stats.finished(304, now - 60, 0)  # beyond the last bucket: +Inf only
    values = store.snapshot()
    assert values is not None
    samples = parse(render(cfg, store.registry, values, never_down, INSTANCE))

    def requests(status: str) -> float:
        labels = (("location", "= /healthz"), ("server", "site.test"), ("status", status))
        return samples[("edgeproxy_requests_total", labels)]

    assert [requests(s) for s in ("1xx", "2xx", "3xx", "4xx", "5xx")] == [1, 0, 1, 1, 0]

    def cumulative(le: str) -> float:
        return samples[
            ("edgeproxy_request_duration_seconds_bucket", (("le", le), ("server", "site.test")))
        ]

    assert cumulative("0.25") == 1 and cumulative("0.5") == 2 and cumulative("10.0") == 2
    assert cumulative("+Inf") == 3
    count = samples[("edgeproxy_request_duration_seconds_count", (("server", "site.test"),))]
    assert count == 3
    total = samples[("edgeproxy_request_duration_seconds_sum", (("server", "site.test"),))]
    assert 60.3 <= total < 61
    assert len(BUCKETS) + 2 == HISTOGRAM_SLOTS == SUM_SLOT + 1
    # The compiled build's own copy of the bounds is the one the scrape labels.
    for i, bound in enumerate(BUCKETS):
        assert bucket(bound) == i and bucket(bound * 1.001) == i + 1
    assert bucket(0.0) == 0 and bucket(1e9) == len(BUCKETS)


def test_zone_and_peer_series() -> None:
    cfg = config()
    store = store_for(cfg)
    metrics = worker(store, 0)
    zone = metrics.zone("per_ip")
    assert metrics.zone("per_ip") is zone  # one per zone, whatever the routes using it
    zone.rejected()
    zone.delayed()
    zone.delayed()
    peer = metrics.peer("app", "127.0.0.1:8001")
    peer.responded(peer.attempt(False) - 0.02)
    metrics.set_in_flight(peer, 3)
    metrics.set_queue("app", 2)
    values = store.snapshot()
    assert values is not None

    def down(upstream: str, address: str) -> bool | None:
        return False

    samples = parse(render(cfg, store.registry, values, down, INSTANCE))
    assert samples[("edgeproxy_limit_rejected_total", (("zone", "per_ip"),))] == 1
    assert samples[("edgeproxy_limit_delayed_total", (("zone", "per_ip"),))] == 2
    labels = (("peer", "127.0.0.1:8001"), ("upstream", "app"))
    assert samples[("edgeproxy_upstream_peer_requests_total", labels)] == 1
    assert samples[("edgeproxy_upstream_peer_in_flight", labels)] == 3
    assert samples[("edgeproxy_upstream_peer_up", labels)] == 0
    assert samples[("edgeproxy_upstream_queue_length", (("upstream", "app"),))] == 2
    upstream = (("le", "0.025"), ("upstream", "app"))
    assert samples[("edgeproxy_upstream_response_duration_seconds_bucket", upstream)] == 1
    assert samples[("edgeproxy_workers", ())] == 2
    assert samples[("edgeproxy_reloads_total", ())] == 1
    assert samples[("edgeproxy_reload_failures_total", ())] == 3
    assert samples[("edgeproxy_config_last_reload_successful", ())] == 0
    assert samples[("edgeproxy_config_last_reload_success_timestamp_seconds", ())] == 1796300000.5
    build = (("build", "pure Python"), ("codec", "h11"), ("version", "0.1.0"))
    assert samples[("edgeproxy_build_info", build)] == 1


def test_labels_are_escaped_and_shared_server_labels_are_shown_once() -> None:
    cfg = config(
        locations='      - {regex: "^/a\\"b\\\\\\\\c", return: {status: 204}}',
        servers='  - listen: ["127.0.0.1:8081"]\n    server_name: [site.test]\n'
        "    locations: [{path: /, return: {status: 204}}]",
    )
    store = store_for(cfg)
    values = store.snapshot()
    assert values is not None
    text = render(cfg, store.registry, values, never_down, INSTANCE)
    samples = parse(text)
    regex = [labels for (name, labels) in samples if ("location", '~ ^/a"b\\\\c') in labels]
    assert regex, text
    assert text.count('edgeproxy_requests_total{server="site.test",location="/",status="2xx"}') == 1


# --- the scrape's HTTP answers ---


async def test_the_endpoint_answers_its_path_only() -> None:
    async def scrape() -> str:
        return "edgeproxy_workers 2\n"

    endpoint = Endpoint("/metrics", scrape)
    ok = await endpoint.answer(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nedgeproxy_workers 2\n")
    assert b"Content-Type: text/plain; version=0.0.4" in ok
    head = await endpoint.answer(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 20\r\n" in head  # what the GET would get
    assert (await endpoint.answer(b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
    assert (await endpoint.answer(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    assert (await endpoint.answer(b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")

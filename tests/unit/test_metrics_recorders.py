"""The request path's metrics recorders, both kinds through the same tests: the C ones
(edgeproxy.metrics._rowstats, in the compiled build) and the pure-Python fallback
(edgeproxy.metrics.recorder's Shadow* classes). Each event lands in the worker's shared
row at once (a worker killed with SIGKILL loses nothing it counted), and the clock
readings the recorders return are the ones the access log's upstream times reuse."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

from edgeproxy.config import Config, parse_config
from edgeproxy.http.events import RequestHead
from edgeproxy.metrics.binding import HAVE_C_RECORDERS, WorkerMetrics, recorder_kind
from edgeproxy.metrics.layout import PEER, REQUEST_TIME, REQUESTS, TRAFFIC, UPSTREAM_TIME, ZONE
from edgeproxy.metrics.recorder import BUCKETS, SUM_SLOT, bucket
from edgeproxy.metrics.store import MetricsStore
from edgeproxy.server.body import RequestBody
from edgeproxy.server.request import Request, Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler

NOT_BUILT = "the C module edgeproxy.metrics._rowstats is not built (a pure-Python tree)"
PEER_NAME = "127.0.0.1:8001"


@pytest.fixture(
    params=[
        pytest.param("c", marks=pytest.mark.skipif(not HAVE_C_RECORDERS, reason=NOT_BUILT)),
        "shadow",
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def config() -> Config:
    return parse_config(
        """
limits:
  per_ip: {key: client_ip, rate: 10r/s}
upstreams:
  app: {servers: ["127.0.0.1:8001"]}
servers:
  - listen: ["127.0.0.1:8080"]
    server_name: [site.test]
    locations:
      - {path: /, proxy_pass: app}
""",
        "t.yaml",
    )


class Worker:
    """A store with one worker row, and that worker's recorders of the kind asked."""

    def __init__(self, kind: str) -> None:
        self.config = config()
        self.store = MetricsStore(capacity=512, rows=2)
        self.store.registry.assign(self.config)
        self.store.open_row(0)
        row = self.store.row(0)
        assert row is not None
        self.metrics = WorkerMetrics(row, self.store.registry, kind)
        self.server = self.config.servers[0]

    def base(self, group: str, *labels: str) -> int:
        return self.store.registry.base((group, labels))

    def slots(self, group: str, labels: tuple[str, ...], size: int) -> list[float]:
        values = self.store.snapshot()
        assert values is not None
        start = self.base(group, *labels)
        return values[start : start + size]


def test_the_install_picks_the_c_recorders_when_they_are_built() -> None:
    assert recorder_kind() == ("c" if HAVE_C_RECORDERS else "shadow")
    if not HAVE_C_RECORDERS:
        with pytest.raises(ValueError, match="no 'c' recorders here"):
            Worker("c")
    with pytest.raises(ValueError, match="no 'other' recorders here"):
        Worker("other")


def test_a_finished_request_counts_its_status_class_time_and_body_bytes(kind: str) -> None:
    w = Worker(kind)
    stats = w.metrics.route(w.server, w.server.locations[0])
    now = time.time()
    stats.finished(200, now - 0.3, 1000)  # 0.3s: the 0.5 bucket
    stats.finished(101, now, 0)
    stats.finished(499, now, 5)  # the client left: a 4xx
    stats.finished(600, now - 60, 0)  # no such class: counted as 5xx; beyond every bound
    statuses = w.slots(REQUESTS, ("site.test", "/"), 5)
    assert statuses == [1.0, 1.0, 0.0, 1.0, 1.0]
    histogram = w.slots(REQUEST_TIME, ("site.test",), SUM_SLOT + 1)
    assert histogram[BUCKETS.index(0.5)] == 1
    assert histogram[len(BUCKETS)] == 1  # +Inf
    assert sum(histogram[:SUM_SLOT]) == 4
    assert 60.3 <= histogram[SUM_SLOT] < 61  # the sum of the four times, in seconds
    assert w.slots(TRAFFIC, (), 2) == [0.0, 1005.0]  # received, sent body bytes


def test_a_peer_counts_attempts_retries_failures_and_response_times(kind: str) -> None:
    w = Worker(kind)
    stats = w.metrics.peer("app", PEER_NAME)
    before = time.monotonic()
    first = stats.attempt(False)
    after = time.monotonic()
    assert before <= first <= after  # the monotonic clock, as the access log's times
    stats.failed()
    retried = stats.attempt(True)
    ended = stats.responded(retried - 0.02)  # 20 ms: the 0.025 bucket
    assert retried <= ended <= time.monotonic()
    w.metrics.set_in_flight(stats, 3)
    # requests, failures, retries, in flight
    assert w.slots(PEER, ("app", PEER_NAME), 4) == [2.0, 1.0, 1.0, 3.0]
    histogram = w.slots(UPSTREAM_TIME, ("app",), SUM_SLOT + 1)
    assert histogram[BUCKETS.index(0.025)] == 1 and sum(histogram[:SUM_SLOT]) == 1
    assert 0.02 <= histogram[SUM_SLOT] < 1.0


def test_traffic_and_zones_count(kind: str) -> None:
    w = Worker(kind)
    w.metrics.traffic.received(100)
    w.metrics.traffic.received(23)
    zone = w.metrics.zone("per_ip")
    assert w.metrics.zone("per_ip") is zone  # one per zone, whatever the routes using it
    zone.rejected()
    zone.delayed()
    zone.delayed()
    assert w.slots(TRAFFIC, (), 2) == [123.0, 0.0]
    assert w.slots(ZONE, ("per_ip",), 2) == [1.0, 2.0]


def test_a_worker_killed_right_after_counting_has_lost_nothing(kind: str) -> None:
    w = Worker(kind)
    route = w.metrics.route(w.server, w.server.locations[0])
    peer = w.metrics.peer("app", PEER_NAME)
    pid = os.fork()
    if pid == 0:  # the worker: counts, then dies without running any exit code
        try:
            for _ in range(5):
                w.metrics.traffic.received(10)
                peer.responded(peer.attempt(False))
                route.finished(200, time.time(), 7)
            w.metrics.zone("per_ip").rejected()
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert w.slots(REQUESTS, ("site.test", "/"), 2) == [0.0, 5.0]
    assert w.slots(TRAFFIC, (), 2) == [50.0, 35.0]
    assert w.slots(PEER, ("app", PEER_NAME), 1) == [5.0]
    assert sum(w.slots(UPSTREAM_TIME, ("app",), SUM_SLOT)) == 5
    assert w.slots(ZONE, ("per_ip",), 1) == [1.0]
    w.store.fold(0)  # the master reaps it: the counts go to the retired row
    values = w.store.snapshot()
    assert values is not None and values[w.base(REQUESTS, "site.test", "/") + 1] == 5


def test_both_kinds_write_the_same_counts() -> None:
    if not HAVE_C_RECORDERS:
        pytest.skip(NOT_BUILT)
    rows = []
    for kind in ("c", "shadow"):
        w = Worker(kind)
        route = w.metrics.route(w.server, w.server.locations[0])
        peer = w.metrics.peer("app", PEER_NAME)
        now = time.time()
        for status, seconds in ((200, 0.003), (302, 0.07), (404, 0.7), (503, 7.0)):
            route.finished(status, now - seconds, status)
            peer.responded(peer.attempt(status == 503) - seconds)
        peer.failed()
        w.metrics.traffic.received(99)
        w.metrics.zone("per_ip").delayed()
        values = w.store.snapshot()
        assert values is not None
        sums = {
            w.base(REQUEST_TIME, "site.test") + SUM_SLOT,
            w.base(UPSTREAM_TIME, "app") + SUM_SLOT,
        }
        rows.append([0.0 if i in sums else v for i, v in enumerate(values)])
    assert rows[0] == rows[1]


def test_the_c_recorders_use_the_same_buckets_and_keep_their_row_mapped() -> None:
    if not HAVE_C_RECORDERS:
        pytest.skip(NOT_BUILT)
    from edgeproxy.metrics import _rowstats

    assert _rowstats.SUM_SLOT == SUM_SLOT
    for i, bound in enumerate(BUCKETS):
        for seconds in (bound, bound * 1.001):
            assert _rowstats.bucket(seconds) == bucket(seconds)
        assert _rowstats.bucket(bound) == i
    assert _rowstats.bucket(-1.0) == 0 and _rowstats.bucket(1e9) == len(BUCKETS)
    assert _rowstats.bucket(float("nan")) == bucket(float("nan")) == len(BUCKETS)

    memory = bytearray(8 * 4)
    view = memoryview(memory).cast("d")
    traffic = _rowstats.TrafficCounter(view, 2)
    assert traffic.base == 2
    del view
    gc.collect()
    with pytest.raises(BufferError):  # still exported: the recorder holds the buffer
        memory.extend(b"\0" * 8)
    traffic.received(5)
    assert memoryview(memory).cast("d").tolist() == [0.0, 0.0, 5.0, 0.0]

    row = memoryview(bytearray(8 * 20)).cast("d")
    with pytest.raises(ValueError, match="block"):
        _rowstats.TrafficCounter(row, 19)  # its two slots would pass the row's end
    with pytest.raises(ValueError, match="block"):
        _rowstats.PeerCounter(row, 0, 8)  # the histogram would pass the row's end
    with pytest.raises(ValueError, match="block"):
        _rowstats.RequestCounter(row, 0, 0, -1)
    with pytest.raises((BufferError, TypeError)):
        _rowstats.ZoneCounter(bytes(64), 0)  # read-only
    with pytest.raises(TypeError):
        _rowstats.RequestCounter(row, 0, 5, 0).finished(200, 0.0)  # type: ignore[call-arg]


# --- the access log's upstream times reuse the recorders' readings ---

_SERVER = parse_config(
    'servers: [{listen: ["127.0.0.1:0"], locations: [{path: /, return: {status: 200}}]}]', "t"
).servers[0]
_ROUTE = Route(_SERVER, None, AnswerHandler(Answer(200)), (), b"")


def timed_request() -> Request:
    head = RequestHead(b"GET", b"/", b"1.1", [])
    return Request(head, _ROUTE, RequestBody(0, ""), "127.0.0.1", time.time(), timed=True)


def test_an_attempts_times_use_the_readings_the_metrics_took() -> None:
    request = timed_request()
    request.upstream_try("127.0.0.1:8001", 1000.0)
    assert request.upstream_started == 1000.0
    request.upstream_ended(1000.25)
    assert request.upstream_response_time == 0.25


def test_without_metrics_an_attempt_reads_the_monotonic_clock_itself() -> None:
    request = timed_request()
    before = time.monotonic()
    request.upstream_try("127.0.0.1:8001")
    assert before <= request.upstream_started <= time.monotonic()
    request.upstream_ended()
    assert 0.0 <= request.upstream_response_time < 60

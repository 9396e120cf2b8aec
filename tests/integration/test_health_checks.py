"""Active health checks through the real CLI: two workers, real gunicorn servers whose
/health status a test flips, and one prober process for the whole instance."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Gunicorn, free_port, start_gunicorn, wait_until
from tests.integration.cli_proxy import children
from tests.integration.test_master import Edge, get
from tests.integration.test_uwsgi import UWSGI, Uwsgi, start_uwsgi

INTERVAL = 0.2
CHECK = f"{{path: /health, interval: {INTERVAL}, timeout: 0.15, fails: 2, passes: 2}}"
PROBER = re.compile(r"health prober (\d+) started")
# Requests per round: enough to reach both servers through round robin over two workers.
ROUND = 12


class CheckedEdge(Edge):
    """An Edge whose master also has a prober child: `workers()` leaves it out."""

    def probers(self) -> list[int]:
        return [int(pid) for pid in PROBER.findall(self.errors())]

    def workers(self) -> set[int]:
        return children(self.pid) - set(self.probers())


@dataclass
class Server:
    gunicorn: Gunicorn
    health: Path

    def set_status(self, status: int) -> None:
        self.health.write_text(str(status))

    def probes(self) -> list[float]:
        """The times (CLOCK_MONOTONIC) at which the server answered a probe."""
        log = Path(f"{self.health}.log")
        return [float(x) for x in log.read_text().split()] if log.exists() else []


def start_server(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    health = tmp_path / f"{name}.status"
    monkeypatch.setenv("HEALTH_FILE", str(health))  # read by the app, through its env
    return Server(start_gunicorn(name, workers=2), health)


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, Server]]:
    first = start_server("a", tmp_path, monkeypatch)
    try:
        second = start_server("b", tmp_path, monkeypatch)
    except BaseException:
        first.gunicorn.stop()
        raise
    yield first, second
    first.gunicorn.stop()
    second.gunicorn.stop()


@pytest.fixture
def edge(tmp_path: Path, servers: tuple[Server, Server]) -> Iterator[CheckedEdge]:
    proxy = CheckedEdge(tmp_path, free_port(), servers[0].gunicorn.address)
    yield proxy
    proxy.stop()


def upstream(servers: tuple[Server, Server], check: str = CHECK) -> str:
    addresses = ", ".join(f'"{s.gunicorn.address}"' for s in servers)
    return f"{{servers: [{addresses}], health_check: {check}}}"


def answered_by(edge: Edge, count: int = ROUND) -> list[str]:
    """Who answered each of `count` requests (errors as 'status N')."""
    names = []
    for _ in range(count):
        answer = get(edge.url)
        names.append(answer.text.strip().removeprefix("hello from ") if answer.status_code == 200
                     else f"status {answer.status_code}")  # fmt: skip
    return names


def probes_in(server: Server, start: float, end: float) -> int:
    return sum(start <= t < end for t in server.probes())


def measure(server: Server, window: float) -> int:
    """Probes the server gets during `window` seconds from now (a measurement, not a settle:
    the count over a fixed span is what is checked)."""
    start = time.monotonic()
    time.sleep(window)
    return probes_in(server, start, start + window)


def assert_one_probe_per_interval(count: int, window: float) -> None:
    # One prober: about window / interval. A prober per worker (or two probers after a
    # reload) would give about twice that.
    expected = window / INTERVAL
    assert expected / 2 <= count <= expected + 2, (count, expected)


def test_a_failing_server_is_taken_out_and_comes_back(
    edge: CheckedEdge, servers: tuple[Server, Server]
) -> None:
    a, _ = servers
    edge.start(workers=2, upstream=upstream(servers))
    assert len(edge.probers()) == 1
    assert set(answered_by(edge)) == {"a", "b"}

    a.set_status(503)
    edge.wait_log(r"server \S+ fails its health checks")
    # Taken out: every request goes to b, whatever the worker (a would answer them fine:
    # only its /health fails, so none of them was tried on a and retried).
    assert set(answered_by(edge, 2 * ROUND)) == {"b"}

    a.set_status(200)
    edge.wait_log(r"passes its health checks again")
    assert "a" in answered_by(edge)


def test_one_probe_per_interval_for_the_instance_and_across_a_reload(
    edge: CheckedEdge, servers: tuple[Server, Server]
) -> None:
    a, _ = servers
    edge.start(workers=2, upstream=upstream(servers))
    wait_until(lambda: len(a.probes()) >= 2, 10, "probes")
    window = 10 * INTERVAL
    assert_one_probe_per_interval(measure(a, window), window)
    (first,) = edge.probers()

    old = edge.workers()
    edge.signal(signal.SIGHUP)
    edge.wait_log(r"reloaded: generation 2")
    edge.wait_workers(2, exclude=old)
    wait_until(lambda: len(edge.probers()) == 2, 10, "a new prober")
    assert not os.path.exists(f"/proc/{first}")  # the old prober is gone, not doubled
    assert_one_probe_per_interval(measure(a, window), window)
    assert set(answered_by(edge)) == {"a", "b"}


def test_a_prober_that_dies_is_started_again(
    edge: CheckedEdge, servers: tuple[Server, Server]
) -> None:
    a, _ = servers
    a.set_status(503)
    edge.start(workers=2, upstream=upstream(servers))
    out = r"server \S+ fails its health checks"
    edge.wait_log(out)
    (first,) = edge.probers()
    os.kill(first, signal.SIGKILL)
    edge.wait_log(r"health prober \d+ died")
    wait_until(lambda: len(edge.probers()) == 2, 10, "a new prober")
    count = len(a.probes())
    # More probes than `fails` from the new prober: it kept the verdict "out" (a fresh
    # start would have logged a second "fails"), and a still gets no request.
    wait_until(lambda: len(a.probes()) > count + 3, 10, "probes from the new prober")
    assert len(re.findall(out, edge.errors())) == 1
    assert set(answered_by(edge)) == {"b"}


def test_with_every_server_failing_requests_go_to_all_of_them(
    edge: CheckedEdge, servers: tuple[Server, Server]
) -> None:
    for server in servers:
        server.set_status(500)
    edge.start(workers=2, upstream=upstream(servers))
    edge.wait_log(r"upstream app: every server fails its health checks")
    # As nginx: tried anyway (here they answer / fine; only /health fails).
    assert set(answered_by(edge)) == {"a", "b"}
    servers[1].set_status(200)
    edge.wait_log(r"upstream app: a server passes its health checks again")
    assert set(answered_by(edge, 2 * ROUND)) == {"b"}


@pytest.mark.skipif(
    UWSGI is None and not os.environ.get("CI"), reason="uWSGI is not installed (see .ci/run)"
)
def test_uwsgi_pools_are_probed_with_the_uwsgi_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = {name: tmp_path / f"{name}.status" for name in ("a", "b")}
    started: list[Uwsgi] = []
    edge = CheckedEdge(tmp_path, free_port(), "")
    try:
        for name in ("a", "b"):
            monkeypatch.setenv("HEALTH_FILE", str(health[name]))
            started.append(start_uwsgi(name))
        addresses = ", ".join(f'"{u.address}"' for u in started)
        edge.start(
            workers=2,
            upstream=f"{{protocol: uwsgi, servers: [{addresses}], health_check: {CHECK}}}",
        )
        assert set(answered_by(edge)) == {"a", "b"}
        health["a"].write_text("503")
        edge.wait_log(r"server \S+ fails its health checks")
        assert set(answered_by(edge, 2 * ROUND)) == {"b"}
        health["a"].write_text("200")
        edge.wait_log(r"passes its health checks again")
        assert "a" in answered_by(edge)
        assert Path(f"{health['b']}.log").read_text()  # b was probed too, over uwsgi
    finally:
        edge.stop()
        for upstream in started:
            upstream.stop()


def test_after_a_reload_every_server_starts_healthy_again(
    edge: CheckedEdge, servers: tuple[Server, Server]
) -> None:
    a, _ = servers
    a.set_status(503)
    edge.start(workers=2, upstream=upstream(servers))
    out = r"server \S+ fails its health checks"
    edge.wait_log(out)
    edge.signal(signal.SIGHUP)
    edge.wait_log(r"reloaded: generation 2")
    # The new prober starts from "healthy" and must prove a failing again: a second
    # verdict, not a state carried over (a restarted prober, unlike this, keeps it).
    edge.wait_log(out, count=2)
    assert set(answered_by(edge, 2 * ROUND)) == {"b"}

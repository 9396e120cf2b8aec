"""The metrics scrape of a real edgeproxy (the CLI, two workers, gunicorn behind it), read
with prometheus_client's parser: the counts add up to the requests sent, across a worker
killed with SIGKILL and across reloads."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gunicorn, free_port, run_cli, wait_until
from tests.integration.cli_proxy import CliProxy, children
from tests.integration.test_master import get

READY = re.compile(r"worker (\d+) ready")
EXPORTER = re.compile(r"metrics exporter (\d+) serving")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class MeteredEdge(CliProxy):
    """Two workers and the metrics exporter, on a port of its own."""

    def __init__(self, root: Path, upstream: str) -> None:
        super().__init__(root, free_port())
        self.metrics_port = free_port()
        self.upstream = upstream

    def write_config(self, locations: str = "", metrics_port: int | None = None) -> None:
        self.config.write_text(
            f"""workers: 2
pid_file: {self.dir / "edgeproxy.pid"}
error_log: {{path: {self.error_log}, level: info}}
access_log: {{format: off}}
temp_path: {self.dir}
metrics: {{listen: "127.0.0.1:{metrics_port or self.metrics_port}", path: /metrics}}
upstreams:
  app: {{servers: ["{self.upstream}"]}}
servers:
  - listen: ["127.0.0.1:{self.port}"]
    server_name: [site.test]
    locations:
      - {{exact: /healthz, return: {{status: 200, body: "ok\\n"}}}}
      - {{exact: /missing, return: {{status: 404}}}}
{locations}
      - {{path: /, proxy_pass: app}}
"""
        )

    def start(self) -> None:
        self.write_config()
        self.launch()
        self.wait_workers(set())

    def workers(self) -> set[int]:
        """The master's live children that are workers (not the exporter)."""
        ready = {int(pid) for pid in READY.findall(self.errors())}
        return children(self.pid) & ready

    def wait_workers(self, gone: set[int]) -> set[int]:
        """Two workers serve, none of `gone`, and the exporter answers."""

        def settled() -> bool:
            assert self.running(), self.errors()
            live = children(self.pid)
            workers = self.workers()
            exporters = {int(pid) for pid in EXPORTER.findall(self.errors())} & live
            return len(workers) == 2 and not workers & gone and len(live) == 3 and bool(exporters)

        wait_until(settled, 15, "two workers and the exporter")
        return self.workers()

    def scrape(self) -> Samples:
        answer = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples: Samples = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def send(edge: MeteredEdge, count: int, path: str, status: int) -> None:
    for _ in range(count):
        assert get(edge.url, path).status_code == status


@pytest.fixture
def edge(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[MeteredEdge]:
    proxy = MeteredEdge(tmp_path, gunicorn_a.address)
    proxy.start()
    yield proxy
    proxy.stop()


def requests_of(samples: Samples, location: str, status: str) -> float:
    return total(
        samples, "edgeproxy_requests_total", server="site.test", location=location, status=status
    )


def test_counts_add_up_across_a_kill_and_a_reload(edge: MeteredEdge) -> None:
    send(edge, 20, "/", 200)
    send(edge, 7, "/healthz", 200)
    send(edge, 3, "/missing", 404)
    samples = edge.scrape()
    assert requests_of(samples, "/", "2xx") == 20
    assert requests_of(samples, "= /healthz", "2xx") == 7
    assert requests_of(samples, "= /missing", "4xx") == 3
    assert total(samples, "edgeproxy_requests_total") == 30
    assert total(samples, "edgeproxy_request_duration_seconds_count") == 30
    bucket = {"server": "site.test", "le": "+Inf"}
    assert total(samples, "edgeproxy_request_duration_seconds_bucket", **bucket) == 30
    peer = {"upstream": "app", "peer": edge.upstream}
    assert total(samples, "edgeproxy_upstream_peer_requests_total", **peer) == 20
    assert total(samples, "edgeproxy_upstream_response_duration_seconds_count") == 20
    assert total(samples, "edgeproxy_upstream_peer_up", **peer) == 1
    assert total(samples, "edgeproxy_workers") == 2
    assert total(samples, "edgeproxy_received_bytes_total") > 30 * len("GET / HTTP/1.0\r\n")
    assert total(samples, "edgeproxy_sent_body_bytes_total") >= 7 * len("ok\n")
    build = [labels for (name, labels) in samples if name == "edgeproxy_build_info"]
    assert len(build) == 1 and dict(build[0])["build"] in ("compiled", "pure Python")

    # kill -9: what the worker counted stays, and the restart is counted.
    first = edge.workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    edge.wait_workers({victim})
    samples = edge.scrape()
    assert requests_of(samples, "/", "2xx") == 20
    assert total(samples, "edgeproxy_requests_total") == 30
    assert total(samples, "edgeproxy_upstream_peer_requests_total", **peer) == 20
    assert total(samples, "edgeproxy_worker_restarts_total") == 1
    send(edge, 10, "/", 200)
    assert requests_of(edge.scrape(), "/", "2xx") == 30

    # A reload with one more location: the series it keeps keep their counts.
    old = edge.workers()
    edge.write_config(locations='      - {path: /new/, return: {status: 302, location: "/"}}')
    assert run_cli("-s", "reload", "-c", str(edge.config)).returncode == 0
    wait_until(lambda: total(edge.scrape(), "edgeproxy_reloads_total") == 1, 15, "the reload")
    edge.wait_workers(old)  # the new generation serves, the old one is gone
    send(edge, 4, "/new/x", 302)
    send(edge, 5, "/", 200)
    samples = edge.scrape()
    assert requests_of(samples, "/", "2xx") == 35
    assert requests_of(samples, "/new/", "3xx") == 4
    assert total(samples, "edgeproxy_requests_total") == 49
    assert total(samples, "edgeproxy_worker_restarts_total") == 1  # retired, not died

    # A reload without it: that series is gone from the scrape, the others keep counting.
    edge.write_config()
    edge.signal(signal.SIGHUP)
    wait_until(lambda: total(edge.scrape(), "edgeproxy_reloads_total") == 2, 15, "the reload")
    samples = edge.scrape()
    assert requests_of(samples, "/new/", "3xx") == 0
    assert not [key for key in samples if ("location", "/new/") in key[1]]
    assert requests_of(samples, "/", "2xx") == 35


def test_a_scrape_taken_before_a_reload_is_answered_by_the_exporter_that_took_it(
    edge: MeteredEdge,
) -> None:
    (old,) = {int(pid) for pid in EXPORTER.findall(edge.errors())}
    with socket.create_connection(("127.0.0.1", edge.metrics_port), timeout=10) as held:
        held.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\n")  # the head is not over yet
        # A scrape behind it is answered, so the exporter has taken ours (accepts are FIFO).
        assert total(edge.scrape(), "edgeproxy_reloads_total") == 0
        edge.signal(signal.SIGHUP)
        wait_until(lambda: len(EXPORTER.findall(edge.errors())) == 2, 15, "a new exporter")
        assert old in children(edge.pid)  # still answering ours
        held.sendall(b"\r\n")
        answer = b""
        while chunk := held.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert b"edgeproxy_requests_total" in answer
    wait_until(lambda: old not in children(edge.pid), 15, "the old exporter gone")
    assert total(edge.scrape(), "edgeproxy_reloads_total") == 1


def test_a_refused_reload_is_counted_and_the_last_reload_gauge_says_it(
    edge: MeteredEdge,
) -> None:
    def reload_state() -> tuple[float, float, float]:
        samples = edge.scrape()
        return (
            total(samples, "edgeproxy_reloads_total"),
            total(samples, "edgeproxy_reload_failures_total"),
            total(samples, "edgeproxy_config_last_reload_successful"),
        )

    def loaded_at() -> float:
        return total(edge.scrape(), "edgeproxy_config_last_reload_success_timestamp_seconds")

    assert reload_state() == (0, 0, 1)  # the start's config loaded
    started = loaded_at()
    assert 0 < started <= time.time()
    workers = edge.workers()

    edge.config.write_text(edge.config.read_text() + "no_such_key: 1\n")
    edge.signal(signal.SIGHUP)
    wait_until(lambda: reload_state() == (0, 1, 0), 15, "the refused reload counted")
    assert "reload failed, still running the previous configuration" in edge.errors()
    assert loaded_at() == started
    assert edge.workers() == workers
    send(edge, 2, "/", 200)  # the previous config serves on

    before = time.time()
    edge.write_config()
    edge.signal(signal.SIGHUP)
    wait_until(lambda: reload_state() == (1, 1, 1), 15, "the good reload counted")
    assert before <= loaded_at() <= time.time()


def test_the_metrics_are_not_served_on_the_public_port(edge: MeteredEdge) -> None:
    assert edge.metrics_port != edge.port
    public = httpx.get(f"{edge.url}/metrics", timeout=10)
    assert "edgeproxy_requests_total" not in public.text  # proxied to the app instead
    private = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/other", timeout=10)
    assert private.status_code == 404


def test_connection_gauges_follow_the_connections(edge: MeteredEdge) -> None:
    def state(name: str) -> float:
        return total(edge.scrape(), "edgeproxy_connections", state=name)

    with socket.create_connection(("127.0.0.1", edge.port)) as waiting:
        # Written by each worker at its heartbeat (every second at most), not per request.
        wait_until(lambda: state("idle") == 1 and state("active") == 1, 10, "one idle")
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: site.test\r\n")  # the head goes on
        wait_until(lambda: state("reading") == 1 and state("idle") == 0, 10, "one reading")
    wait_until(lambda: state("active") == 0, 10, "no connection")


def test_a_killed_exporter_is_replaced_and_nothing_counted_is_lost(edge: MeteredEdge) -> None:
    send(edge, 6, "/healthz", 200)
    (exporter,) = {int(pid) for pid in EXPORTER.findall(edge.errors())}
    os.kill(exporter, signal.SIGKILL)

    def replaced() -> bool:
        return len(EXPORTER.findall(edge.errors())) == 2

    wait_until(replaced, 15, "a new exporter")
    assert f"metrics exporter {exporter} died (killed by SIGKILL)" in edge.errors()
    assert requests_of(edge.scrape(), "= /healthz", "2xx") == 6


def test_check_refuses_a_bad_or_public_metrics_address(tmp_path: Path) -> None:
    edge = MeteredEdge(tmp_path, "127.0.0.1:9")
    edge.write_config(metrics_port=edge.port)
    result = run_cli("-t", "-c", str(edge.config))
    assert result.returncode != 0
    assert f"proxy.yaml:6: metrics.listen: 127.0.0.1:{edge.port} is taken by servers[0]" in (
        result.stderr
    )
    text = edge.config.read_text().replace(f'"127.0.0.1:{edge.port}", path', '"nowhere", path')
    edge.config.write_text(text)
    result = run_cli("-t", "-c", str(edge.config))
    assert result.returncode != 0
    assert "proxy.yaml:6: metrics.listen: expected host:port" in result.stderr


def test_a_taken_metrics_address_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    edge = MeteredEdge(tmp_path, "127.0.0.1:9")
    edge.write_config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", edge.metrics_port))
        taken.listen()
        result = run_cli("-c", str(edge.config))
    assert result.returncode == 1
    assert (
        f"cannot listen for metrics on 127.0.0.1:{edge.metrics_port}: Address already in use"
        in (result.stderr)
    )

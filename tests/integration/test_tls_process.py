"""TLS through the real CLI (master and workers in a subprocess, gunicorn behind)."""

from __future__ import annotations

import collections
import datetime
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gunicorn, free_port, run_cli, wait_until
from tests.integration.test_master import Edge
from tests.tls_certs import Pair, TestCA, same_certificate, served_certificate


@pytest.fixture
def edge(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[Edge]:
    proxy = Edge(tmp_path, free_port(), gunicorn_a.address)
    proxy.extra_ports.append(free_port())
    yield proxy
    proxy.stop()


def tls_server(edge: Edge, pair: Pair) -> str:
    """A second server: the same upstream over TLS on the edge's extra port."""
    return f"""  - listen: ["127.0.0.1:{edge.extra_ports[0]}"]
    server_name: [a.example]
    tls: {pair.yaml()}
    locations:
      - {{path: /, proxy_pass: app}}
"""


def test_https_through_the_cli_reaches_the_upstream_with_x_forwarded_proto_https(
    edge: Edge, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    edge.start(workers=2, servers=tls_server(edge, ca.issue("a.example")))
    with httpx.Client(verify=ca.client_context(), timeout=10) as client:
        url = f"https://127.0.0.1:{edge.extra_ports[0]}"
        for _ in range(5):  # keep-alive: one connection, several requests
            response = client.get(url + "/echo", extensions={"sni_hostname": "a.example"})
            assert response.status_code == 200
            assert response.json()["headers"]["x-forwarded-proto"] == "https"
    plain = httpx.get(edge.url + "/echo", timeout=10)
    assert plain.json()["headers"]["x-forwarded-proto"] == "http"


def test_check_names_the_key_and_line_of_a_mismatched_key(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    a, b = ca.issue("a.example"), ca.issue("b.example")
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "upstreams: {}\nservers:\n  - listen: '127.0.0.1:8443'\n"
        f"    tls:\n      certificate: {a.certificate}\n      key: {b.key}\n"
        "    locations: [{path: /, return: {status: 204}}]\n"
    )
    result = run_cli("-t", "-c", str(path))
    assert result.returncode != 0
    assert f"{path}:6: servers[0].tls.key: {b.key} does not match the certificate" in result.stderr


def test_an_expired_certificate_fails_the_check_but_only_warns_at_start(
    edge: Edge, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    past = datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)
    expired = ca.issue("a.example", not_after=past)
    edge.write_config(servers=tls_server(edge, expired))
    result = run_cli("-t", "-c", str(edge.config))
    assert result.returncode == 1
    line = edge.config.read_text().splitlines().index(f"    tls: {expired.yaml()}") + 1
    assert (
        f"{edge.config}:{line}: servers[1].tls.certificate: {expired.certificate} "
        "expired on 2020-01-02 00:00:00 UTC"
    ) in result.stderr
    edge.start(workers=1, servers=tls_server(edge, expired))  # serves all the same
    warning = f"{edge.config}:{line}: servers[1].tls.certificate"
    assert warning in edge.errors()
    assert same_certificate(served_certificate(edge.extra_ports[0], "a.example"), expired.leaf_pem)
    edge.signal(signal.SIGHUP)  # a reload warns again, and goes ahead
    edge.wait_log("reloaded: generation 2")
    assert edge.errors().count(warning) == 2


def test_a_reload_swaps_the_certificate_with_no_failed_request(edge: Edge, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    old = ca.issue("a.example")
    edge.start(workers=2, servers=tls_server(edge, old))
    port = edge.extra_ports[0]
    assert same_certificate(served_certificate(port, "a.example"), old.leaf_pem)
    stop = threading.Event()
    failures: list[str] = []
    done = collections.Counter[str]()

    def load(keep_alive: bool) -> None:
        headers = {"host": "a.example"} | ({} if keep_alive else {"connection": "close"})
        with httpx.Client(verify=ca.client_context(), timeout=10, headers=headers) as client:
            while not stop.is_set():
                try:
                    response = client.get(
                        f"https://127.0.0.1:{port}/", extensions={"sni_hostname": "a.example"}
                    )
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(str(response.status_code))
                done[str(keep_alive)] += 1

    threads = [threading.Thread(target=load, args=(k,)) for k in (True, True, False, False)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(done.values()) > 50, 10, "the load to run")
        # A renewal as certbot does it: new files in place of the old, then a reload.
        new = ca.issue("a.example", tag="-renewed")
        new.certificate.replace(old.certificate)
        new.key.replace(old.key)
        workers = edge.workers()
        edge.signal(signal.SIGHUP)
        edge.wait_log("reloaded: generation 2")
        edge.wait_workers(2, exclude=workers)
        before = sum(done.values())
        wait_until(lambda: sum(done.values()) > before + 50, 10, "load after the reload")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == [], (failures[:5], len(failures), done)
    assert done["True"] > 0 and done["False"] > 0
    assert same_certificate(served_certificate(port, "a.example"), new.leaf_pem)


def https_get(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSession, bool]:
    """One request on a new connection offering `session`: the session to offer next time
    (TLS 1.3 sends its tickets after the handshake: read a response first), and whether
    this one was resumed."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="a.example", session=session) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: a.example\r\n\r\n")
        while sock.recv(65536):
            pass
        assert sock.session is not None
        return sock.session, sock.session_reused


def test_sessions_resume_on_every_worker_until_a_reload_rotates_the_keys(
    edge: Edge, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    edge.start(workers=2, servers=tls_server(edge, ca.issue("a.example")))
    port = edge.extra_ports[0]
    client = ca.client_context()
    session, reused = https_get(port, client, None)
    assert not reused
    resumed = [https_get(port, client, session)[1] for _ in range(20)]
    assert resumed == [True] * 20
    wait_until(lambda: sum(edge.access_pids().values()) == 21, 10, "21 access log lines")
    assert len(edge.access_pids()) == 2  # both workers resumed the session one made
    workers = edge.workers()
    edge.signal(signal.SIGHUP)
    edge.wait_log("reloaded: generation 2")
    edge.wait_workers(2, exclude=workers)
    assert https_get(port, client, session)[1] is False  # new keys: the old ticket is refused

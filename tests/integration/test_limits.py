"""Access rules, request rates and connection counts through the real CLI with two
workers in front of real gunicorn: the zones are one budget for the whole instance.

Clients come from several loopback addresses (127.0.0.2, 127.0.0.3, ...), each one client
to the limits. Timing assertions are lower bounds only (a delayed request never arrives
early); upper bounds on what passes allow for the rate's refill over the test's own time.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Gunicorn, free_port, wait_until
from tests.integration.test_master import Edge, accepted

ZONES = """limits:
  fast: {key: client_ip, rate: 2r/s, burst: 2, nodelay: true}
  slow: {rate: 5r/s, burst: 10}
  conns: {connections: 2}
  minute: {rate: 1r/m, nodelay: true}
"""
LOCATIONS = """      - {path: /fast/, proxy_pass: app, limit_req: fast}
      - {path: /slow/, proxy_pass: app, limit_req: slow}
      - {path: /minute/, proxy_pass: app, limit_req: minute}
      - {path: /private/, proxy_pass: app, access: [deny 127.0.0.7, allow 127.0.0.0/8, deny all]}"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]


def request(port: int, source: str, path: str, headers: str = "", timeout: float = 10) -> Reply:
    """One request from `source` (a loopback address) on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout, (source, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return Reply(int(head[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()})


@pytest.fixture
def limited(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[Edge]:
    edge = Edge(tmp_path, free_port(), gunicorn_a.address)
    conn_port, proxied_port = free_port(), free_port()
    # A second server with the connection limit, a third behind a PROXY-protocol balancer.
    edge.extra_ports += [conn_port, proxied_port]
    edge.start(
        workers=2,
        top=ZONES,
        locations=LOCATIONS,
        servers=f"""    trusted_proxies: [10.0.0.0/8]
  - listen: ["127.0.0.1:{conn_port}"]
    limit_conn: conns
    locations: [{{exact: /healthz, return: {{status: 200}}}}]
  - listen: [{{address: "127.0.0.1:{proxied_port}", proxy_protocol: true}}]
    limit_conn: conns
    locations:
{LOCATIONS}
      - {{path: /, proxy_pass: app}}""",
    )
    yield edge
    edge.stop()


def test_a_client_over_its_rate_gets_429_with_ratelimit_fields_and_others_do_not(
    limited: Edge,
) -> None:
    began = time.monotonic()
    replies = [request(limited.port, "127.0.0.2", "/fast/echo") for _ in range(12)]
    elapsed = time.monotonic() - began
    passed = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    assert len(passed) + len(refused) == len(replies)
    # One bucket for both workers: 1 + burst at once, then what 2 r/s refills meanwhile.
    assert 3 <= len(passed) <= 3 + math.ceil(elapsed * 2)
    assert replies[0].status == 200 and refused
    for reply in refused:
        assert 1 <= int(reply.headers["retry-after"]) <= 1
        assert reply.headers["ratelimit-policy"] == '"fast";q=2;w=1'
        assert reply.headers["ratelimit"] == f'"fast";r=0;t={reply.headers["retry-after"]}'
    # Another client is not affected; the same client with a spoofed X-Forwarded-For from
    # an untrusted peer is still itself.
    assert request(limited.port, "127.0.0.3", "/fast/echo").status == 200
    spoofed = request(limited.port, "127.0.0.2", "/fast/echo", "X-Forwarded-For: 192.0.2.9\r\n")
    assert spoofed.status == 429


def test_excess_requests_within_the_burst_are_delayed_to_the_rate(limited: Edge) -> None:
    count = 4

    replies: list[Reply] = []

    def timed(_: int) -> tuple[int, float]:
        reply = request(limited.port, "127.0.0.4", "/slow/echo")
        replies.append(reply)
        return reply.status, time.monotonic()

    began = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(timed, range(count)))
    assert [status for status, _ in results] == [200] * count
    # Every delayed answer says so in the RateLimit fields; the one on time does not.
    marked = [reply.headers for reply in replies if "ratelimit" in reply.headers]
    assert len(marked) == count - 1
    assert all(fields["ratelimit-policy"] == '"slow";q=5;w=1' for fields in marked)
    assert all(fields["ratelimit"].startswith('"slow";r=0;t=') for fields in marked)
    finished = sorted(at - began for _, at in results)
    # 5 r/s: the k-th excess request waits k/5 s (minus what leaked while it was sent).
    for k, at in enumerate(finished):
        assert at >= k * 0.2 - 0.05, finished


def test_access_rules_use_the_client_address_and_ignore_an_untrusted_forwarded_for(
    limited: Edge,
) -> None:
    assert request(limited.port, "127.0.0.6", "/private/echo").status == 200
    assert request(limited.port, "127.0.0.7", "/private/echo").status == 403
    forged = request(limited.port, "127.0.0.7", "/private/echo", "X-Forwarded-For: 127.0.0.6\r\n")
    assert forged.status == 403
    assert request(limited.port, "127.0.0.7", "/echo").status == 200  # other locations


def _open(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    wait_until(lambda: accepted(port, sock), 10, "the connection accepted")
    return sock


def _admitted(port: int, source: str) -> bool:
    """A request on a new connection from `source`: answered (True) or refused with 503."""
    status = request(port, source, "/healthz").status
    assert status in (200, 503)
    return status == 200


def test_the_connection_limit_holds_across_workers_and_slots_come_back(limited: Edge) -> None:
    port = limited.extra_ports[0]
    held = [_open(port, "127.0.0.5") for _ in range(2)]
    try:
        wait_until(lambda: not _admitted(port, "127.0.0.5"), 10, "a third connection refused")
        assert _admitted(port, "127.0.0.8")  # another client has its own count
        held.pop().close()  # the client goes away: its slot comes back
        wait_until(lambda: _admitted(port, "127.0.0.5"), 10, "the slot given back")
        held.append(_open(port, "127.0.0.5"))
        wait_until(lambda: not _admitted(port, "127.0.0.5"), 10, "full again")
        # kill -9 every worker: what they held is given back by the master.
        workers = limited.workers()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        limited.wait_workers(2, exclude=workers)
        for sock in held:
            sock.close()
        wait_until(lambda: _admitted(port, "127.0.0.5"), 10, "the dead workers' slots given back")
        held = [_open(port, "127.0.0.5") for _ in range(2)]
        wait_until(lambda: not _admitted(port, "127.0.0.5"), 10, "two held, the third refused")
    finally:
        for sock in held:
            sock.close()


def _behind_balancer(port: int, header: bytes, path: str) -> tuple[int, bytes]:
    """A request after a PROXY header; (status, body), or (0, b"") when closed unanswered."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(header + f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _v2(client: str) -> bytes:
    addresses = ipaddress.IPv4Address(client).packed + bytes(4) + struct.pack("!HH", 4321, 80)
    return b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack("!H", len(addresses)) + addresses


def test_a_proxy_protocol_header_names_the_client_for_limits_rules_and_the_upstream(
    limited: Edge,
) -> None:
    port = limited.extra_ports[1]
    v1 = b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n"
    status, body = _behind_balancer(port, v1, "/echo")
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers["x-real-ip"] == "198.51.100.9"
    assert headers["x-forwarded-for"] == "198.51.100.9"
    # Access rules see the client of the header, v1 and v2 alike (the balancer is 127.0.0.1).
    assert _behind_balancer(port, v1, "/private/echo")[0] == 403
    assert _behind_balancer(port, _v2("127.0.0.9"), "/private/echo")[0] == 200
    assert _behind_balancer(port, _v2("127.0.0.7"), "/private/echo")[0] == 403
    # Rate limits too: one client of the balancer is limited, another is not.
    statuses = [_behind_balancer(port, _v2("192.0.2.50"), "/fast/echo")[0] for _ in range(8)]
    assert statuses[:3] == [200] * 3 and 429 in statuses
    assert _behind_balancer(port, _v2("192.0.2.51"), "/fast/echo")[0] == 200
    # Without a valid header the connection is closed unanswered.
    assert _behind_balancer(port, b"", "/echo") == (0, b"")
    assert _behind_balancer(port, b"PROXY TCP4 nonsense\r\n", "/echo") == (0, b"")


def test_past_worker_connections_the_worker_stops_accepting_until_one_ends(
    tmp_path: Path, gunicorn_a: Gunicorn
) -> None:
    edge = Edge(tmp_path, free_port(), gunicorn_a.address)
    edge.start(workers=1, top="worker_connections: 3")
    held: list[socket.socket] = []
    try:
        held = [_open(edge.port, "127.0.0.1") for _ in range(3)]
        edge.wait_log(r"worker_connections \(3\) reached")
        waiting = socket.create_connection(("127.0.0.1", edge.port), 10)  # the kernel queues it
        held.append(waiting)
        waiting.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):  # not accepted, so not answered
            waiting.recv(100)
        assert not accepted(edge.port, waiting)
        held.pop(0).close()  # room again: the queued connection is taken and answered
        waiting.settimeout(10)
        assert waiting.recv(100).startswith(b"HTTP/1.1 200")
        assert "accepting connections again" in edge.errors()
    finally:
        for sock in held:
            sock.close()
        edge.stop()


def test_a_reload_keeps_the_zones_state(limited: Edge) -> None:
    assert request(limited.port, "127.0.0.9", "/minute/echo").status == 200
    assert request(limited.port, "127.0.0.9", "/minute/echo").status == 429
    old = limited.workers()
    limited.signal(signal.SIGHUP)
    limited.wait_workers(2, exclude=old)
    # A fresh zone would let the next request in; the kept one still counts the first.
    assert request(limited.port, "127.0.0.9", "/minute/echo").status == 429
    assert request(limited.port, "127.0.0.10", "/minute/echo").status == 200

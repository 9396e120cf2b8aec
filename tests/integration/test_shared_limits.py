"""Zones shared by two instances (the real CLI, each its own master and worker) through one
real redis-server, in front of one gunicorn: one client alternating between the instances
gets the budget of one instance, not two; a kill -9ed instance's connection slots come back
after its lease; Redis stopped mid-load gives on_error with no hung request, and Redis
restarted is used again.

Shared counting lags one Redis round trip (edgeproxy.limits.shared): a worker that has no
view of a key yet lets its first request through, so the bounds below allow one request
per worker beyond the budget, and never the instances' sum.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio

from edgeproxy.limits import shared
from tests.conftest import Gunicorn, Proxy, async_wait_until, free_port, wait_until
from tests.integration.test_limits import _admitted, _open, request
from tests.integration.test_master import Edge
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis
__all__ = ["redis_server"]

LEASE = 3.0  # seconds: long against a request, short for a test


def _top(redis_url: str, on_error: str = "local") -> str:
    return f"""shared_state: {{redis: "{redis_url}", timeout: 100ms, on_error: {on_error},
               prefix: site1, lease: {LEASE}s}}
limits:
  minute: {{rate: 1r/m, burst: 4, nodelay: true, shared: true}}
  plenty: {{rate: 1000r/s, burst: 1000, nodelay: true, shared: true}}
  conns: {{connections: 2, shared: true}}
"""


LOCATIONS = """      - {path: /minute/, proxy_pass: app, limit_req: minute}
      - {path: /plenty/, proxy_pass: app, limit_req: plenty}"""


def _servers(conn_port: int) -> str:
    return f"""  - listen: ["127.0.0.1:{conn_port}"]
    limit_conn: conns
    locations: [{{exact: /healthz, return: {{status: 200}}}}]"""


class Pair:
    """Two instances with the same config but their own ports, logs and pid files."""

    def __init__(self, tmp_path: Path, upstream: str, redis_url: str, on_error: str) -> None:
        self.edges: list[Edge] = []
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            edge = Edge(directory, free_port(), upstream)
            edge.extra_ports.append(free_port())
            self.edges.append(edge)
        self.redis_url = redis_url
        self.on_error = on_error

    def start(self) -> Pair:
        for edge in self.edges:
            edge.start(
                workers=1,
                top=_top(self.redis_url, self.on_error),
                locations=LOCATIONS,
                servers=_servers(edge.extra_ports[0]),
            )
        return self

    def stop(self) -> None:
        for edge in self.edges:
            edge.stop()


@pytest.fixture
def pair(
    request: pytest.FixtureRequest, tmp_path: Path, gunicorn_a: Gunicorn, redis_server: RedisServer
) -> Iterator[Pair]:
    on_error = getattr(request, "param", "local")
    instances = Pair(tmp_path, gunicorn_a.address, redis_server.url, on_error).start()
    yield instances
    instances.stop()


def test_a_client_alternating_between_instances_gets_the_budget_of_one(
    pair: Pair, redis_server: RedisServer
) -> None:
    a, b = pair.edges
    statuses = [request((a, b)[i % 2].port, "127.0.0.5", "/minute/").status for i in range(20)]
    passed = statuses.count(200)
    assert set(statuses) == {200, 429}
    # The budget is 1 + burst = 5; each of the two workers may add its first look.
    assert 5 <= passed <= 7, statuses
    assert request(b.port, "127.0.0.6", "/minute/").status == 200  # another client: its own
    with redis.Redis(unix_socket_path=str(redis_server.socket)) as client:
        keys = sorted(client.keys("*"))
    assert b"site1:rate:minute:127.0.0.5" in keys
    assert all(key.startswith(b"site1:") for key in keys)  # namespaced by the prefix


def test_a_killed_instances_connection_slots_come_back_after_its_lease(pair: Pair) -> None:
    a, b = pair.edges
    a_port, b_port = a.extra_ports[0], b.extra_ports[0]
    held = [_open(a_port, "127.0.0.5") for _ in range(2)]
    try:
        # b may let one in on its first look at the key, then it knows a holds both.
        wait_until(lambda: not _admitted(b_port, "127.0.0.5"), 10, "b refuses a third")
        assert _admitted(b_port, "127.0.0.8")  # another client has its own count
        workers = a.workers()
        for pid in (a.pid, *workers):  # the whole instance dies at once
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert a.process is not None
        a.process.wait(10)
        for sock in held:
            sock.close()
        held = []
        # Its lease was renewed a third of a lease ago at most: the slots are still taken.
        assert not _admitted(b_port, "127.0.0.5")
        wait_until(lambda: _admitted(b_port, "127.0.0.5"), LEASE + 10, "the slots given back")
        assert time.monotonic() - killed < LEASE + 10
        # b counts the client's slots on its own now: two held, the third refused.
        held = [_open(b_port, "127.0.0.5") for _ in range(2)]
        wait_until(lambda: not _admitted(b_port, "127.0.0.5"), 10, "two held, the third refused")
    finally:
        for sock in held:
            sock.close()


def _statuses(pair: Pair, count: int) -> list[int]:
    """`count` requests alternating between the instances, four at a time; 0 = no answer
    within the client's timeout (a hung request)."""

    def one(i: int) -> int:
        try:
            return request(
                pair.edges[i % 2].port, f"127.0.1.{i % 50 + 1}", "/plenty/", timeout=5
            ).status
        except OSError:
            return 0

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("pair", ["deny", "local"], indirect=True)
def test_redis_stopped_mid_load_gives_on_error_and_restarted_is_used_again(
    pair: Pair, redis_server: RedisServer
) -> None:
    before = _statuses(pair, 40)
    assert before == [200] * 40
    redis_server.stop()
    started = time.monotonic()
    during = _statuses(pair, 200)
    took = time.monotonic() - started
    assert 0 not in during  # no request hung on Redis
    assert took < 20
    if pair.on_error == "deny":
        # The first requests may pass on the views; once a call fails, the zone's status.
        assert during[-50:] == [429] * 50, during
    else:  # the instance's own zone: the budget is plenty for this load
        assert during == [200] * 200
    for edge in pair.edges:
        wait_until(lambda e=edge: "failed" in e.errors(), 10, "Redis down logged")  # type: ignore[misc]
        assert edge.errors().count("shared zones use on_error") == 1  # once per episode
    print(f"on_error={pair.on_error}: Redis down, {during.count(200)} passed,"
          f" {during.count(429)} refused, {during.count(0)} hung of {len(during)}")  # fmt: skip

    redis_server.start()
    for edge in pair.edges:
        wait_until(lambda e=edge: "answers again" in e.errors(), 10, "Redis back logged")  # type: ignore[misc]
    assert _statuses(pair, 40) == [200] * 40
    with redis.Redis(unix_socket_path=str(redis_server.socket)) as client:
        # Both instances count in it again (a restarted Redis starts empty). What a worker
        # let through reaches Redis in its next batch, a moment after the answer.
        wait_until(lambda: len(client.keys("site1:rate:plenty:*")) == 40, 10, "40 keys in Redis")


def test_an_instance_starts_with_redis_down_says_so_and_applies_on_error(
    tmp_path: Path, gunicorn_a: Gunicorn
) -> None:
    edge = Edge(tmp_path, free_port(), gunicorn_a.address)
    edge.extra_ports.append(free_port())
    missing = f"unix://{tmp_path}/no-redis.sock"
    edge.start(workers=1, top=_top(missing, "deny"), locations=LOCATIONS,
               servers=_servers(edge.extra_ports[0]))  # fmt: skip
    try:
        wait_until(lambda: "shared zones use on_error=deny" in edge.errors(), 10, "logged")
        assert request(edge.port, "127.0.0.5", "/plenty/").status == 429
        assert request(edge.port, "127.0.0.5", "/healthz").status == 200  # no zone there
    finally:
        edge.stop()


async def test_a_worker_in_process_counts_a_shared_zone_in_redis(
    start_proxy: Callable[..., Awaitable[Proxy]], redis_server: RedisServer
) -> None:
    proxy = await start_proxy(
        f"""shared_state: {{redis: "{redis_server.url}", prefix: inproc}}
limits:
  tight: {{rate: 1r/m, burst: 1, nodelay: true, shared: true}}
servers:
  - listen: "127.0.0.1:0"
    limit_req: tight
    locations: [{{path: /, return: {{status: 200}}}}]
"""
    )
    client = redis.asyncio.Redis(unix_socket_path=str(redis_server.socket))
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            statuses = []
            for _ in range(4):
                statuses.append((await http.get("/")).status_code)
                await async_wait_until(
                    lambda: not any(z.flushing for z in shared._rate_zones.values()), 5, "sent"
                )
        assert statuses == [200, 200, 429, 429]
        assert await client.hget("inproc:rate:tight:127.0.0.1", "e") == b"1000"
    finally:
        await client.aclose()

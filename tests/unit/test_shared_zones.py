"""Shared zones in-process against a real redis-server: two RedisLinks are two instances.
Budgets are one for all, keys are namespaced, on_error applies while Redis is down or
slow, and Redis coming back is used again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeproxy.config.model import SharedStateConfig, ZoneConfig
from edgeproxy.limits.leaky import PASS, REJECT
from edgeproxy.limits.shared import (
    RedisLink,
    SharedConnectionZone,
    SharedRateZone,
    shown_url,
)
from edgeproxy.limits.zones import ZoneStore, now_ms
from tests.conftest import async_wait_until
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis
__all__ = ["redis_server"]


def _shared(server: RedisServer, **settings: object) -> SharedStateConfig:
    # A timeout far above the default: on a loaded test machine Redis may take longer than
    # the default 50 ms, and then the zone falls back to local state, which these tests
    # (about atomicity and leases, not timeouts) would read as lost requests.
    settings.setdefault("timeout", 2.0)
    return SharedStateConfig(redis=server.url, **settings)  # type: ignore[arg-type]


def _rate_zone(shared: SharedStateConfig, name: str = "r", burst: int = 4) -> ZoneConfig:
    # One request a minute refills nothing within a test: the budget is 1 + burst.
    return ZoneConfig(name, "rate", rate=1 / 60, rate_window=60, burst=burst, nodelay=True,
                      size=32 * 1024, shared=shared)  # fmt: skip


class Instances:
    """Links made by a test, closed at its end."""

    def __init__(self) -> None:
        self.links: list[RedisLink] = []

    def link(self, shared: SharedStateConfig) -> RedisLink:
        link = RedisLink(shared)
        self.links.append(link)
        return link

    def rate(self, zone: ZoneConfig) -> SharedRateZone:
        assert zone.shared is not None
        return SharedRateZone(zone, self.link(zone.shared), ZoneStore().rate(zone))

    def connections(self, zone: ZoneConfig) -> SharedConnectionZone:
        assert zone.shared is not None
        return SharedConnectionZone(zone, self.link(zone.shared), ZoneStore().connections(zone))


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    made = Instances()
    yield made
    for link in made.links:
        for task in list(link._tasks):
            task.cancel()
        await asyncio.gather(*link._tasks, return_exceptions=True)
        await link.client.aclose()


async def _settled(zone: SharedRateZone | SharedConnectionZone) -> None:
    """Wait until the zone has nothing unsent and no call in flight."""
    pending = zone.unsent if isinstance(zone, SharedRateZone) else zone.dirty
    await async_wait_until(lambda: not zone.flushing and not pending, 5, "the batch sent")


async def test_two_instances_share_one_budget(
    redis_server: RedisServer, instances: Instances
) -> None:
    zone = _rate_zone(_shared(redis_server))
    a, b = instances.rate(zone), instances.rate(zone)
    passed = 0
    for i in range(20):
        counter = (a, b)[i % 2]
        passed += counter.take("10.0.0.1", now_ms()).kind == PASS
        await _settled(counter)
    # 1 + burst, as one instance alone, and b's first request of the key: b has no view of
    # it yet and lets it through as a first request (the README's bound: one per instance).
    assert passed == 6
    assert b.take("10.0.0.2", now_ms()).kind == PASS  # another key has its own


async def test_without_waiting_an_instance_overshoots_by_at_most_what_one_round_trip_sees(
    redis_server: RedisServer, instances: Instances
) -> None:
    zone = _rate_zone(_shared(redis_server))
    a, b = instances.rate(zone), instances.rate(zone)
    # Each instance alone lets 5 through before it hears of the other: the surplus stays.
    passed = sum(c.take("k", now_ms()).kind == PASS for c in (a, b) for _ in range(10))
    assert passed == 10
    await _settled(a)
    await _settled(b)
    # The shared bucket holds 10 requests for a budget of 5: both refuse from now on.
    # (The one whose batch came second saw all ten; the other saw its own five.)
    assert sorted([a.views["k"][0], b.views["k"][0]]) == [4000, 9000]
    assert a.take("k", now_ms()).kind == REJECT
    assert b.take("k", now_ms()).kind == REJECT


async def test_concurrent_instances_lose_no_request_in_redis(
    redis_server: RedisServer, instances: Instances
) -> None:
    # Eight instances let requests through at once, in interleaved batches: every one of
    # them is in the shared bucket (one atomic script per batch, no read-then-write).
    zone = _rate_zone(_shared(redis_server), burst=10**6)
    counters = [instances.rate(zone) for _ in range(8)]
    for _ in range(25):
        for counter in counters:
            for _ in range(5):
                assert counter.take("k", now_ms()).kind == PASS
        await asyncio.sleep(0)  # let batches go out while more requests come
    for counter in counters:
        await _settled(counter)
    excess = int(await counters[0].link.client.hget("edgeproxy:rate:r:k", "e"))
    # 1000 per request but the first; 1r/m leaks 16 a second, and this takes a few seconds.
    assert 1000 * (8 * 25 * 5 - 1) - 200 <= excess <= 1000 * (8 * 25 * 5 - 1)


async def test_keys_are_namespaced_by_prefix_and_zone(
    redis_server: RedisServer, instances: Instances
) -> None:
    site1 = instances.rate(_rate_zone(_shared(redis_server, prefix="site1"), burst=0))
    site2 = instances.rate(_rate_zone(_shared(redis_server, prefix="site2"), burst=0))
    assert site1.take("k", now_ms()).kind == PASS
    await _settled(site1)
    assert site2.take("k", now_ms()).kind == PASS  # the same zone name and key, another site
    await _settled(site2)
    assert site1.take("k", now_ms()).kind == REJECT
    keys = await site1.link.client.keys("*")
    assert sorted(keys) == [b"site1:rate:r:k", b"site2:rate:r:k"]


@pytest.mark.parametrize("on_error", ["local", "allow", "deny"])
async def test_redis_down_applies_on_error_logs_once_and_redis_back_is_used_again(
    redis_server: RedisServer,
    instances: Instances,
    on_error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    zone = _rate_zone(_shared(redis_server, on_error=on_error), burst=1)
    counter = instances.rate(zone)
    assert counter.take("k", now_ms()).kind == PASS
    await _settled(counter)
    redis_server.stop()
    caplog.set_level(logging.INFO, "edgeproxy.limits")
    # The next request is decided on the view; sending it finds Redis gone.
    assert counter.take("k", now_ms()).kind == PASS
    await async_wait_until(lambda: not counter.link.up, 5, "Redis found down")
    kinds = [counter.take("k", now_ms()).kind for _ in range(4)]
    expected = {"local": [PASS, PASS, REJECT, REJECT], "allow": [PASS] * 4, "deny": [REJECT] * 4}
    assert kinds == expected[on_error]  # local: the instance's own zone, which started empty
    down = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(down) == 1 and f"on_error={on_error}" in down[0].getMessage()

    redis_server.start()
    await async_wait_until(lambda: counter.link.up, 5, "Redis found again")
    assert any("answers again" in r.getMessage() for r in caplog.records)
    # Counted in Redis again: the key's shared budget (1 + burst) was partly used before.
    assert counter.take("k", now_ms()).kind == PASS  # Redis lost it all (no persistence)
    await _settled(counter)
    assert counter.take("k", now_ms()).kind == PASS
    await _settled(counter)
    assert counter.take("k", now_ms()).kind == REJECT
    assert await counter.link.client.exists("edgeproxy:rate:r:k")


async def test_redis_slower_than_the_timeout_counts_as_down(
    redis_server: RedisServer, instances: Instances
) -> None:
    counter = instances.rate(_rate_zone(_shared(redis_server, timeout=0.05, on_error="allow")))
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = asyncio.get_running_loop().time()
        for _ in range(50):  # never waits: every decision is at once
            assert counter.take("k", now_ms()).kind in (PASS, REJECT)
        assert asyncio.get_running_loop().time() - started < 1
        await async_wait_until(lambda: not counter.link.up, 5, "Redis found slow")
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    await async_wait_until(lambda: counter.link.up, 5, "Redis found again")


def _conn_zone(shared: SharedStateConfig, connections: int = 2) -> ZoneConfig:
    return ZoneConfig("c", "connections", connections=connections, size=32 * 1024, shared=shared)


async def test_connection_slots_are_counted_across_instances_and_a_dead_ones_expire(
    redis_server: RedisServer, instances: Instances
) -> None:
    zone = _conn_zone(_shared(redis_server, lease=0.5))
    a, b = instances.connections(zone), instances.connections(zone)
    assert a.acquire("ip", now_ms()) == 0
    assert a.acquire("ip", now_ms()) == 1
    await _settled(a)
    assert b.acquire("ip", now_ms()) == 0  # b's first look at the key: let in on no view
    await _settled(b)
    b.release("ip")
    await _settled(b)
    assert b.acquire("ip", now_ms()) == 2  # refused: a holds both
    await _settled(b)
    a.release("ip")
    await _settled(a)
    assert b.acquire("ip", now_ms()) == 2  # refused on its view, which it refreshes
    await _settled(b)
    assert b.acquire("ip", now_ms()) == 1  # admitted: a holds one now
    await _settled(b)
    # a dies: it renews nothing from now on, so its slot is free once its lease ran out.
    for task in list(a.link._tasks):
        task.cancel()
    a.link.up = False  # nothing more of a's reaches Redis
    lease_key = a.link.lease_prefix + a.link.holder
    # Its lease runs out (the kill -9 test of tests/integration waits for the real expiry).
    await b.link.client.delete(lease_key)
    assert b.acquire("ip", now_ms()) == 2  # refused on the view, refreshed
    await _settled(b)
    assert b.acquire("ip", now_ms()) == 1  # admitted: only b's own slot is held
    assert await b.link.client.hkeys("edgeproxy:conn:c:ip") == [b.link.holder.encode()]


async def test_a_held_slot_is_renewed_within_the_lease(
    redis_server: RedisServer, instances: Instances
) -> None:
    zone = _conn_zone(_shared(redis_server, lease=0.3), connections=1)
    a, b = instances.connections(zone), instances.connections(zone)
    assert a.acquire("ip", now_ms()) == 0
    a.link.start()  # renewing (a worker's first request starts it)
    await _settled(a)
    assert b.acquire("ip", now_ms()) == 0  # b's first look: on no view
    await _settled(b)
    b.release("ip")
    await _settled(b)
    lease_key = a.link.lease_prefix + a.link.holder
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0  # over three leases: a's slot stays all along
    while loop.time() < deadline:
        assert await a.link.client.pttl(lease_key) > 0
        await asyncio.sleep(0.05)
    assert b.acquire("ip", now_ms()) == 1
    await _settled(b)
    assert b.acquire("ip", now_ms()) == 1  # still refused after a refresh


def test_the_log_never_shows_a_password() -> None:
    assert shown_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert shown_url("rediss://user:s3cret@h/1") == "rediss://user:***@h/1"
    assert shown_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_the_default_prefix_and_path(tmp_path: Path) -> None:
    link = RedisLink(SharedStateConfig(redis=f"unix://{tmp_path}/r.sock"))
    assert link.lease_prefix == "edgeproxy:lease:"

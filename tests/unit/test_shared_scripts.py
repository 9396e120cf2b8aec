"""The Redis scripts of shared zones, run in a real redis-server: the rate script's
arithmetic is nginx's leaky bucket (edgeproxy.limits.leaky), request by request and in
batches; the connection script counts live holders only."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from edgeproxy.limits.leaky import REJECT, Bucket, take
from edgeproxy.limits.redis_scripts import CONNECTIONS, RATE
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis
__all__ = ["redis_server"]  # the fixture, used by name


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis(unix_socket_path=str(redis_server.socket)) as client:
        yield client


def _rate_script(client: redis.Redis, rate: int, now: int, counts: dict[str, int]) -> list[int]:
    script = client.register_script(RATE)
    return [int(x) for x in script(keys=list(counts), args=[rate, now, *counts.values()])]


@pytest.mark.parametrize("rate_per_s", [0.0166, 1, 2.5, 10, 1000])
def test_rate_script_follows_the_leaky_bucket_request_by_request(
    client: redis.Redis, rate_per_s: float
) -> None:
    # A burst no request exceeds: the script accounts what the instance let through, so
    # each request is one the local bucket lets through too.
    bucket = Bucket(rate_per_s, 10**9, 0, True)
    rng = random.Random(rate_per_s)
    excess, last, known = 0, 0, False
    now = 1_000_000
    for _ in range(300):
        now += rng.choice([0, 0, 1, 7, 50, 400, 3000, 90_000])
        outcome = take(bucket, excess, last, now, known)
        assert outcome.kind != REJECT
        excess, last, known = outcome.excess, outcome.last, True
        assert _rate_script(client, bucket.rate, now, {"k": 1}) == [excess]
        assert int(client.hget("k", "l") or 0) == last


def test_a_batch_is_its_requests_at_one_millisecond(client: redis.Redis) -> None:
    bucket = Bucket(3, 10**9, 0, True)
    excess, last, known = 0, 0, False
    for now, n in [(5000, 4), (5000, 1), (5400, 3), (9000, 2), (100_000, 5)]:
        for _ in range(n):
            outcome = take(bucket, excess, last, now, known)
            excess, last, known = outcome.excess, outcome.last, True
        assert _rate_script(client, bucket.rate, now, {"b": n}) == [excess]


def test_rate_script_keys_are_independent_and_expire_once_leaked(client: redis.Redis) -> None:
    assert _rate_script(client, 1000, 10, {"x": 3, "y": 1}) == [2000, 0]
    assert 0 < client.pttl("x") <= 62_000  # leaked empty in 2 s, kept a minute beyond
    assert _rate_script(client, 1000, 1010, {"x": 1}) == [2000]  # 1 s leaked 1000, +1000


def test_a_surplus_above_the_burst_stays_to_be_paid_back(client: redis.Redis) -> None:
    # Two instances let through 5 each at one moment: the bucket holds all of it.
    assert _rate_script(client, 2000, 100, {"k": 5}) == [4000]
    assert _rate_script(client, 2000, 100, {"k": 5}) == [9000]
    bucket = Bucket(2, 4, 0, True)
    assert take(bucket, 9000, 100, 2100, True).kind == REJECT  # 2 s later: 5000 > burst
    assert take(bucket, 9000, 100, 3100, True).kind != REJECT  # 3 s later: leaked to 4000


def _connections(client: redis.Redis, holder: str, counts: dict[str, int]) -> list[int]:
    script = client.register_script(CONNECTIONS)
    keys = [f"lease:{holder}", *counts]
    return [int(x) for x in script(keys=keys, args=[holder, 10_000, "lease:", *counts.values()])]


def test_connection_script_sums_the_other_live_holders(client: redis.Redis) -> None:
    assert _connections(client, "a", {"ip1": 2, "ip2": 1}) == [0, 0]
    assert _connections(client, "b", {"ip1": 3}) == [2]
    assert _connections(client, "a", {"ip1": 1}) == [3]  # absolute: a holds 1 now, not 3
    assert _connections(client, "c", {"ip1": 0, "ip2": 0}) == [4, 1]
    assert 0 < client.pttl("lease:a") <= 10_000


def test_a_holder_whose_lease_ran_out_holds_nothing(client: redis.Redis) -> None:
    _connections(client, "a", {"ip": 2})
    _connections(client, "b", {"ip": 1})
    client.delete("lease:a")  # as its expiry does, `lease` after its last renewal
    assert _connections(client, "c", {"ip": 0}) == [1]
    assert client.hkeys("ip") == [b"b"]  # a's field is gone for good


def test_a_holder_giving_back_its_last_slot_leaves_no_key(client: redis.Redis) -> None:
    _connections(client, "a", {"ip": 1})
    _connections(client, "a", {"ip": 0})
    assert not client.exists("ip")

"""The limiter arithmetic (nginx's limit_req, with an injected clock), the keys, the access
rules, and the shared zones: one budget for several workers, bounded memory, a lock that
dies with its holder, connection slots given back for a dead worker."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

import pytest

from edgeproxy.config.model import AccessRule, ZoneConfig
from edgeproxy.limits import zones as zones_module
from edgeproxy.limits.access import AccessRules
from edgeproxy.limits.keys import address_key, key_function
from edgeproxy.limits.leaky import DELAY, PASS, REJECT, Bucket, take
from edgeproxy.limits.table import SharedTable
from edgeproxy.limits.zones import ZoneStore

# --- the leaky bucket, against ngx_http_limit_req_module's integer arithmetic ---


class Key:
    """One key's stored state, updated as a zone updates it (not on REJECT)."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.known = False
        self.excess = 0
        self.last = 0

    def at(self, now: int) -> tuple[int, int]:
        outcome = take(self.bucket, self.excess, self.last, now, self.known)
        if outcome.kind != REJECT:
            self.known, self.excess, self.last = True, outcome.excess, outcome.last
        return outcome.kind, outcome.wait_ms


def test_rates_are_kept_in_nginx_units_and_truncated_as_nginx_does() -> None:
    assert Bucket(10, 0, 0, False).rate == 10000
    assert Bucket(600 / 60, 0, 0, False).rate == 10000  # 600r/m
    assert Bucket(1 / 60, 0, 0, False).rate == 16  # 1r/m: 1000 / 60 in integers
    assert Bucket(10, 20, 0, False).burst == 20000


def test_nodelay_passes_the_burst_at_once_then_rejects_until_the_bucket_leaks() -> None:
    key = Key(Bucket(10, 2, 0, nodelay=True))
    assert key.at(0) == (PASS, 0)  # a new key starts empty
    assert key.at(0) == (PASS, 0)  # excess 1000
    assert key.at(0) == (PASS, 0)  # excess 2000 = burst
    assert key.at(0) == (REJECT, 100)  # 3000 > 2000: 100 ms until 1000 leaks at 10 r/s
    assert key.excess == 2000  # a rejected request changes nothing
    assert key.at(99) == (REJECT, 1)  # 2000 - 990 + 1000 = 2010
    assert key.at(100) == (PASS, 0)  # 2000 - 1000 + 1000
    assert (key.excess, key.last) == (2000, 100)


def test_without_nodelay_excess_within_the_burst_is_delayed_to_the_rate() -> None:
    key = Key(Bucket(10, 5, 0, nodelay=False))
    assert key.at(0) == (PASS, 0)
    assert key.at(0) == (DELAY, 100)  # excess 1000 at 10 r/s
    assert key.at(0) == (DELAY, 200)
    assert key.at(50) == (DELAY, 250)  # 3000 - 500 + 1000 = 2500
    assert key.at(1000) == (PASS, 0)  # 2500 - 9500 + 1000 is below 0: clamped to 0
    assert key.excess == 0


def test_two_stage_delay_passes_the_first_n_then_delays_then_rejects() -> None:
    key = Key(Bucket(10, 5, 2, nodelay=False))
    outcomes = [key.at(0) for _ in range(8)]
    assert outcomes == [
        (PASS, 0),  # new
        (PASS, 0),  # excess 1000 <= delay 2000
        (PASS, 0),  # 2000
        (DELAY, 100),  # 3000: (3000 - 2000) * 1000 / 10000
        (DELAY, 200),
        (DELAY, 300),  # 5000 = burst
        (REJECT, 100),  # 6000 > burst
        (REJECT, 100),
    ]


def test_last_moves_only_when_a_millisecond_passed_and_a_clock_jump_back_is_clamped() -> None:
    key = Key(Bucket(1, 100, 0, nodelay=True))
    key.at(1000)
    key.at(1000)
    assert (key.excess, key.last) == (1000, 1000)
    key.at(1500)  # 1000 - 1000 * 500 / 1000 + 1000
    assert (key.excess, key.last) == (1500, 1500)
    key.at(1400)  # backwards by less than a minute: no leak, last unchanged
    assert (key.excess, key.last) == (2500, 1500)
    key.at(1500 - 70000)  # far backwards: counted as 1 ms (1 r/s leaks 1 in 1 ms)
    assert (key.excess, key.last) == (3499, 1500 - 70000)


# --- keys and access rules ---


def test_keys_of_a_client_its_network_and_a_header() -> None:
    assert key_function("client_ip")("192.0.2.7", []) == "192.0.2.7"
    assert key_function("client_ip/24")("192.0.2.7", []) == "192.0.2.0/24"
    assert key_function("client_ip/24")("2001:db8:1:2:3::9", []) == "2001:db8:1:2::/64"
    assert key_function("client_ip/16/48")("2001:db8:1:2:3::9", []) == "2001:db8:1::/48"
    assert key_function("client_ip/16/48")("::ffff:10.1.2.3", []) == "10.1.0.0/16"
    assert key_function("client_ip/56")("10.1.2.3", []) == "10.1.2.3/32"
    api = key_function("header:x-api-key")
    assert api("192.0.2.7", [(b"x-api-key", b"k1")]) == "k1"
    assert api("192.0.2.7", []) is None  # no key: not limited, as nginx
    assert address_key("client_ip/24")("198.51.100.200") == "198.51.100.0/24"
    assert key_function("client_ip")("unix:", []) is None  # no address: not limited
    assert key_function("client_ip/24")("unix:", []) is None


def _rules(*text: str) -> AccessRules:
    rules = []
    for rule in text:
        verb, target = rule.split()
        network = None if target == "all" else ipaddress.ip_network(target)
        rules.append(AccessRule(verb == "allow", network))
    return AccessRules(rules)


def test_access_rules_first_match_wins_for_ipv4_and_ipv6() -> None:
    rules = _rules("deny 192.0.2.0/24", "allow 10.0.0.0/8", "allow 2001:db8::/32", "deny all")
    assert not rules.allows("192.0.2.1")
    assert rules.allows("10.9.8.7")
    assert rules.allows("::ffff:10.9.8.7")  # an IPv4-mapped peer is its IPv4 address
    assert rules.allows("2001:db8::1")
    assert not rules.allows("2001:db9::1")
    assert not rules.allows("198.51.100.1")
    assert not rules.allows("unix:")  # only `all` matches a unix-socket client
    assert _rules("deny 10.0.0.1").allows("10.0.0.2")  # no rule matches: allowed
    assert _rules("allow 10.0.0.1/32", "deny all").allows("10.0.0.1")


# --- shared zones ---


def rate_zone(**fields: object) -> ZoneConfig:
    return ZoneConfig(name="r", kind="rate", **fields)  # type: ignore[arg-type]


def test_two_workers_draw_on_one_budget() -> None:
    store = ZoneStore()
    config = rate_zone(rate=10.0, burst=2, nodelay=True)
    first, second = store.rate(config), store.rate(config)  # as two workers build them
    kinds = [(first if i % 2 else second).take("192.0.2.1", 5000).kind for i in range(5)]
    assert kinds == [PASS, PASS, PASS, REJECT, REJECT]
    assert first.take("192.0.2.2", 5000).kind == PASS  # another key, its own bucket


def test_a_zone_stays_within_its_size_under_200k_distinct_keys() -> None:
    table = SharedTable(32 * 1024)
    config = rate_zone(rate=1.0, burst=0, nodelay=True)
    zone = zones_module.RateZone(config, table, ZoneStore()._table(config)[1])
    for i in range(200_000):
        zone.take(f"k{i}", i)
    assert table.used() <= table.rows == 1024
    # The keys seen last are still there (a second request at once is over the rate);
    # the first ones were evicted (a fresh bucket lets them in again).
    recent = [zone.take(f"k{i}", 200_000).kind for i in range(199_990, 200_000)]
    assert recent == [REJECT] * 10
    assert zone.take("k0", 200_000).kind == PASS


def test_the_zone_lock_is_released_when_its_holder_is_killed() -> None:
    store = ZoneStore()
    zone = store.rate(rate_zone(rate=1.0))
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the lock and never gives it back
        try:
            zone.lock.acquire()
            os.write(ready_w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        assert not zone.lock.try_acquire()  # held by the child
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
    assert zone.take("192.0.2.1", 0).kind == PASS  # would block forever if still held


def test_connection_slots_are_counted_per_worker_and_reclaimed_for_a_dead_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ZoneStore()
    zone = store.connections(ZoneConfig(name="c", kind="connections", connections=3))
    monkeypatch.setattr(zones_module.os, "getpid", lambda: 101)
    assert zone.acquire("192.0.2.1", 0) == 0
    assert zone.acquire("192.0.2.1", 0) == 1
    monkeypatch.setattr(zones_module.os, "getpid", lambda: 202)
    assert zone.acquire("192.0.2.1", 0) == 2
    assert zone.acquire("192.0.2.1", 0) == 3  # refused: nothing counted
    assert zone.count("192.0.2.1") == 3
    zone.release("192.0.2.1")
    assert zone.count("192.0.2.1") == 2
    assert store.reclaim(101) == 1  # worker 101 died holding two
    assert zone.count("192.0.2.1") == 0
    assert zone.acquire("192.0.2.1", 0) == 0


def test_a_dry_run_connection_zone_counts_but_never_refuses() -> None:
    zone = ZoneStore().connections(
        ZoneConfig(name="c", kind="connections", connections=1, dry_run=True)
    )
    assert [zone.acquire("192.0.2.1", 0) for _ in range(3)] == [0, 1, 2]


def test_the_master_raises_the_open_files_limit_for_worker_connections() -> None:
    # In a child process: the limit of this one stays as it is.
    script = """
import resource
from edgeproxy.config.model import Config
from edgeproxy.process.fd_limit import raise_fd_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
raise_fd_limit(Config(source="t", upstreams={}, servers=(), worker_connections=1000))
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    soft, hard = int(out[0]), int(out[1])
    assert soft == (2 * 1000 + 256 if hard == -1 or hard >= 2256 else hard)


def test_processes_updating_one_key_at_once_lose_no_update() -> None:
    # Four processes (as four workers) race on one key, all started at once: the lock lets
    # exactly 1 + burst through, as one process would; lost updates would let more in.
    zone = ZoneStore().rate(rate_zone(rate=1 / 60, burst=1500, nodelay=True))
    go_read, go_write = os.pipe()
    children = []
    for _ in range(4):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.read(go_read, 1)
                passed = sum(zone.take("192.0.2.1", 1000).kind == PASS for _ in range(1000))
                os.write(write_end, b"%d" % passed)
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    os.write(go_write, b"xxxx")  # one byte each: they start together
    total = 0
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            total += int(pipe.read())
        assert os.waitpid(pid, 0)[1] == 0
    os.close(go_read)
    os.close(go_write)
    assert total == 1501

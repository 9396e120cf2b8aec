from __future__ import annotations

import random
from collections import Counter

from edgeproxy.config.model import Address, PeerConfig
from edgeproxy.upstream.balancers import IpHash, LeastConn, RandomTwo, RoundRobin
from edgeproxy.upstream.peer import Peer


def peers(*weights: int) -> list[Peer]:
    return [
        Peer(PeerConfig(Address("tcp", "127.0.0.1", 9000 + i), weight=w), i)
        for i, w in enumerate(weights)
    ]


def test_round_robin_follows_weights_smoothly() -> None:
    a, b, c = peers(5, 1, 1)
    balancer = RoundRobin()
    picks = [balancer.select([a, b, c], "") for _ in range(7)]
    assert Counter(picks) == {a: 5, b: 1, c: 1}
    # Smooth: the heavy peer is never picked more than twice in a row within a cycle.
    assert picks == [a, a, b, a, c, a, a]


def test_round_robin_distribution_over_many_cycles() -> None:
    a, b = peers(3, 1)
    balancer = RoundRobin()
    counts = Counter(balancer.select([a, b], "") for _ in range(400))
    assert counts == {a: 300, b: 100}


def test_least_conn_prefers_the_idle_peer() -> None:
    a, b = peers(1, 1)
    a.active = 3
    balancer = LeastConn()
    assert all(balancer.select([a, b], "") is b for _ in range(5))


def test_least_conn_weighs_active_requests() -> None:
    a, b = peers(4, 1)
    a.active, b.active = 3, 1  # 3/4 < 1/1
    assert LeastConn().select([a, b], "") is a


def test_least_conn_breaks_ties_round_robin() -> None:
    a, b = peers(1, 1)
    balancer = LeastConn()
    assert Counter(balancer.select([a, b], "") for _ in range(10)) == {a: 5, b: 5}


def test_ip_hash_is_sticky_and_moves_only_clients_of_a_missing_peer() -> None:
    all_peers = peers(1, 1, 1)
    balancer = IpHash(all_peers)
    clients = [f"10.0.0.{i}" for i in range(60)]
    first = {ip: balancer.select(all_peers, ip) for ip in clients}
    assert len(set(first.values())) == 3
    assert all(balancer.select(all_peers, ip) is first[ip] for ip in clients)
    survivors = all_peers[:2]
    for ip in clients:
        chosen = balancer.select(survivors, ip)
        if first[ip] in survivors:
            assert chosen is first[ip]
        else:
            assert chosen in survivors


def test_random_two_picks_the_less_loaded_of_two() -> None:
    a, b = peers(1, 1)
    a.active = 10
    balancer = RandomTwo(random.Random(1))
    assert all(balancer.select([a, b], "") is b for _ in range(10))


def test_peer_is_unavailable_after_max_fails_within_fail_timeout() -> None:
    (peer,) = [Peer(PeerConfig(Address("tcp", "h", 1), max_fails=2, fail_timeout=10), 0)]
    assert not peer.record_failure(100.0)
    assert peer.available(100.0)
    assert peer.record_failure(101.0)
    assert not peer.available(105.0)
    assert peer.available(111.0)


def test_failures_spread_beyond_fail_timeout_do_not_add_up() -> None:
    peer = Peer(PeerConfig(Address("tcp", "h", 1), max_fails=2, fail_timeout=10), 0)
    peer.record_failure(100.0)
    assert not peer.record_failure(120.0)
    assert peer.available(120.0)


def test_max_conns_caps_a_peer() -> None:
    peer = Peer(PeerConfig(Address("tcp", "h", 1), max_conns=2), 0)
    peer.active = 2
    assert not peer.available(0.0)

"""`down: true`: a peer kept in the pool's list, never offered to the balancer."""

from __future__ import annotations

from collections import Counter

import pytest

from edgeproxy.config.model import Address, PeerConfig, UpstreamConfig
from edgeproxy.http.codec import CODECS
from edgeproxy.upstream.pool import UpstreamPool

CLIENTS = [f"198.51.100.{n}" for n in range(200)]


def pool(balance: str, *peers: PeerConfig) -> UpstreamPool:
    config = UpstreamConfig("app", servers=peers, balance=balance)
    return UpstreamPool(config, CODECS["h11"]())


def peer(port: int, *, down: bool = False, backup: bool = False) -> PeerConfig:
    return PeerConfig(Address("tcp", "127.0.0.1", port), down=down, backup=backup)


def port_for(upstream: UpstreamPool, key: str) -> int:
    chosen = upstream.select((), key)
    assert chosen is not None
    return chosen.address.port


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "ip_hash", "random_two"])
async def test_a_down_peer_is_never_selected(balance: str) -> None:
    upstream = pool(balance, peer(1), peer(2, down=True), peer(3), peer(4, backup=True))
    picks = Counter(port_for(upstream, key) for key in CLIENTS)
    assert set(picks) == {1, 3}
    # Retries go on to the other live peers, then to the backup, never to the down one.
    first, second, third = upstream.peers[0], upstream.peers[2], upstream.peers[3]
    assert upstream.select({first}, "k") is second
    assert upstream.select({first, second}, "k") is third
    assert upstream.select({first, second, third}, "k") is None
    assert not upstream.has_candidate({first, second, third})


async def test_ip_hash_keys_of_live_peers_do_not_move() -> None:
    every = pool("ip_hash", peer(1), peer(2), peer(3))
    one_down = pool("ip_hash", peer(1), peer(2, down=True), peer(3))
    before = {key: port_for(every, key) for key in CLIENTS}
    after = {key: port_for(one_down, key) for key in CLIENTS}
    moved = {key for key in CLIENTS if before[key] != after[key]}
    assert moved == {key for key in CLIENTS if before[key] == 2}
    assert moved  # the test means something: some clients were on the down peer


async def test_a_lone_server_marked_down_gets_nothing() -> None:
    upstream = pool("round_robin", peer(1, down=True))
    assert upstream.select((), "k") is None
    assert not upstream.has_candidate(())


async def test_primaries_all_down_send_to_the_backup() -> None:
    upstream = pool("round_robin", peer(1, down=True), peer(2, backup=True))
    assert {upstream.select((), key) for key in CLIENTS[:10]} == {upstream.peers[1]}

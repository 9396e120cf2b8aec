"""Balancers pick one peer among candidates; health decides who the candidates are.

Each is a small class chosen by name from BALANCERS. `select` is only called with a
non-empty candidate list and must not look at health itself.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence

from edgeproxy.upstream.peer import Peer


class Balancer:
    def select(self, candidates: Sequence[Peer], key: str) -> Peer:
        raise NotImplementedError


def smooth_weighted(candidates: Sequence[Peer]) -> Peer:
    """nginx's smooth weighted round robin: weights 5,1,1 give a,a,b,a,c,a,a, not a,a,a,a,a,b,c."""
    if len(candidates) == 1:
        return candidates[0]
    total = 0
    best = candidates[0]
    for peer in candidates:
        peer.current_weight += peer.weight
        total += peer.weight
        if peer.current_weight > best.current_weight:
            best = peer
    best.current_weight -= total
    return best


class RoundRobin(Balancer):
    def select(self, candidates: Sequence[Peer], key: str) -> Peer:
        return smooth_weighted(candidates)


class LeastConn(Balancer):
    """Fewest in-flight requests per unit of weight; ties go round robin (as nginx)."""

    def select(self, candidates: Sequence[Peer], key: str) -> Peer:
        best: list[Peer] = []
        for peer in candidates:
            if not best:
                best.append(peer)
                continue
            # Compare active/weight without division: a/w < b/v  <=>  a*v < b*w.
            lhs = peer.active * best[0].weight
            rhs = best[0].active * peer.weight
            if lhs < rhs:
                best = [peer]
            elif lhs == rhs:
                best.append(peer)
        return smooth_weighted(best)


class IpHash(Balancer):
    """The same client key maps to the same peer while that peer is a candidate."""

    def __init__(self, peers: Sequence[Peer]) -> None:
        self.peers = list(peers)

    def select(self, candidates: Sequence[Peer], key: str) -> Peer:
        digest = zlib.crc32(key.encode())
        allowed = set(candidates)
        count = len(self.peers)
        # Re-hash on a miss, like nginx, so only the clients of an unavailable peer move.
        for attempt in range(20):
            peer = self.peers[(digest + attempt * 2654435761) % count]
            if peer in allowed:
                return peer
        return candidates[digest % len(candidates)]


class RandomTwo(Balancer):
    """Power of two random choices: pick two, keep the less loaded (per unit of weight)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def select(self, candidates: Sequence[Peer], key: str) -> Peer:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.rng.sample(list(candidates), 2)
        return a if a.active * b.weight <= b.active * a.weight else b


def make_balancer(name: str, peers: Sequence[Peer]) -> Balancer:
    return BALANCERS[name](peers)


BALANCERS: dict[str, Callable[[Sequence[Peer]], Balancer]] = {
    "round_robin": lambda peers: RoundRobin(),
    "least_conn": lambda peers: LeastConn(),
    "ip_hash": IpHash,
    "random_two": lambda peers: RandomTwo(),
}

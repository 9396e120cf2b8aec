"""A peer: one backend address of an upstream pool, with its passive health state.

Health here is nginx's max_fails/fail_timeout: `max_fails` failures within `fail_timeout`
make a peer unavailable for `fail_timeout`. The state lives in this worker for now; the
master/worker release moves it to memory shared by all workers.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from edgeproxy.config.model import PeerConfig

if TYPE_CHECKING:
    from edgeproxy.upstream.connection import UpstreamConnection


class Peer:
    __slots__ = (
        "active",
        "address",
        "backup",
        "current_weight",
        "fail_timeout",
        "failed_until",
        "fails",
        "first_fail_at",
        "idle",
        "index",
        "max_conns",
        "max_fails",
        "name",
        "weight",
    )

    def __init__(self, config: PeerConfig, index: int) -> None:
        self.address = config.address
        self.name = str(config.address)
        self.index = index
        self.weight = config.weight
        self.max_fails = config.max_fails
        self.fail_timeout = config.fail_timeout
        self.max_conns = config.max_conns
        self.backup = config.backup
        self.active = 0  # requests in flight to this peer (least_conn, max_conns)
        self.current_weight = 0  # smooth weighted round robin state
        self.fails = 0
        self.first_fail_at = 0.0
        self.failed_until = 0.0
        self.idle: deque[UpstreamConnection] = deque()  # keep-alive connections, newest last

    def __repr__(self) -> str:
        return f"Peer({self.name})"

    def available(self, now: float) -> bool:
        if self.max_conns and self.active >= self.max_conns:
            return False
        return now >= self.failed_until

    def record_failure(self, now: float) -> bool:
        """Count a failure; True when this failure takes the peer out of rotation."""
        if self.max_fails == 0:
            return False
        if now - self.first_fail_at > self.fail_timeout:
            self.fails = 0
        if self.fails == 0:
            self.first_fail_at = now
        self.fails += 1
        if self.fails >= self.max_fails:
            self.failed_until = now + self.fail_timeout
            self.fails = 0
            return True
        return False

    def record_success(self) -> None:
        self.fails = 0

"""A peer: one backend address of an upstream pool, with its passive health state.

Health here is nginx's max_fails/fail_timeout: `max_fails` failures within `fail_timeout`
make a peer unavailable for `fail_timeout`. That state is three float64 fields in a
`health` view: under the master it is a row of the memory shared by every worker (see
edgeproxy.process.shared), so a peer one worker marked is avoided by all; a lone worker
gets a private row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from edgeproxy.config.model import Address, PeerConfig
from edgeproxy.metrics.recorder import PeerStats
from edgeproxy.upstream.slots import PeerSlots
from edgeproxy.upstream.streams import ip_family

# The fields of a health row (float64 each): failures counted, when the count started,
# until when the peer is left out, and whether active health checks (the prober,
# edgeproxy.upstream.health) found it failing: 1.0 then, else 0.0. Only the prober writes
# PROBED_DOWN, and only pools with a `health_check` read it.
FAILS: Final = 0
FIRST_FAIL_AT: Final = 1
FAILED_UNTIL: Final = 2
PROBED_DOWN: Final = 3
HEALTH_FIELDS: Final = 4
# (upstream name, peer address) -> that peer's shared health row, or None for a private one.
HealthLookup = Callable[[str, Address], "memoryview[float] | None"]


def private_health() -> memoryview[float]:
    return memoryview(bytearray(8 * HEALTH_FIELDS)).cast("d")


class Peer:
    __slots__ = (
        "active",
        "address",
        "backup",
        "current_weight",
        "down",
        "fail_timeout",
        "health",
        "index",
        "ip_family",
        "max_conns",
        "max_fails",
        "name",
        "slots",
        "stats",
        "weight",
    )

    def __init__(
        self,
        config: PeerConfig,
        index: int,
        health: memoryview[float] | None = None,
        slots: PeerSlots | None = None,
    ) -> None:
        self.address = config.address
        self.name = str(config.address)
        self.index = index  # its place in the pool's peer list (the pool's per-peer tables)
        # AF_INET/AF_INET6 when an IP literal (connects may take the worker's epoll), else 0.
        self.ip_family = ip_family(config.address)
        self.weight = config.weight
        self.max_fails = config.max_fails
        self.fail_timeout = config.fail_timeout
        self.max_conns = config.max_conns
        self.backup = config.backup
        self.down = config.down  # never a candidate (the pool leaves it out)
        self.active = 0  # requests in flight to this peer (least_conn, max_conns)
        self.current_weight = 0  # smooth weighted round robin state
        self.health = private_health() if health is None else health
        # max_conns counted for the whole instance (under the master), else per worker.
        self.slots = slots if config.max_conns else None
        self.stats: PeerStats | None = None  # set by a worker that counts metrics

    def __repr__(self) -> str:
        return f"Peer({self.name})"

    def available(self, now: float) -> bool:
        if self.max_conns and self.active >= self.max_conns:
            return False
        return now >= self.health[FAILED_UNTIL]

    @property
    def probed_down(self) -> bool:
        return self.health[PROBED_DOWN] != 0.0

    @property
    def failed_until(self) -> float:
        return self.health[FAILED_UNTIL]

    @property
    def fails(self) -> int:
        return int(self.health[FAILS])

    def record_failure(self, now: float) -> bool:
        """Count a failure; True when this failure takes the peer out of rotation.

        Other workers may update the same row at the same time: each field is one aligned
        8-byte store, so the worst outcome is a lost count (one more failure needed).
        """
        if self.stats is not None:
            self.stats.failed()
        if self.max_fails == 0:
            return False
        health = self.health
        if now - health[FIRST_FAIL_AT] > self.fail_timeout:
            health[FAILS] = 0
        if health[FAILS] == 0:
            health[FIRST_FAIL_AT] = now
        fails = health[FAILS] + 1
        if fails >= self.max_fails:
            health[FAILED_UNTIL] = now + self.fail_timeout
            health[FAILS] = 0
            return True
        health[FAILS] = fails
        return False

    def attempted(self, retry: bool) -> float:
        """A request goes to this peer (`retry`: after another try failed); its start on
        the monotonic clock, for `responded` and the access log (0.0 when nothing is
        counted: no clock read)."""
        stats = self.stats
        return 0.0 if stats is None else stats.attempt(retry)

    def responded(self, started: float) -> float:
        """The response is complete (`started`: what `attempted` returned); the monotonic
        time now, for the access log (0.0 when nothing is counted: no clock read)."""
        stats = self.stats
        return 0.0 if stats is None else stats.responded(started)

    def record_success(self) -> None:
        if self.health[FAILS]:  # a read, not a write, on the common path: no shared-line churn
            self.health[FAILS] = 0

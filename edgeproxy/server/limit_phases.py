"""The phases of edgeproxy.limits: access rules and request rates (request phases, after
the client address is known), connection counts (a connection phase, at accept)."""

from __future__ import annotations

import logging
import math

from edgeproxy.config.model import AccessRule, ZoneConfig
from edgeproxy.limits.access import AccessRules
from edgeproxy.limits.counters import ConnectionCounter, RateCounter
from edgeproxy.limits.keys import address_key, key_function
from edgeproxy.limits.leaky import DELAY, PASS
from edgeproxy.limits.zones import now_ms
from edgeproxy.metrics.recorder import ZoneStats
from edgeproxy.server.request import Delay, Request, Verdict
from edgeproxy.server.response import Answer

log = logging.getLogger("edgeproxy.limits")

_FORBIDDEN = Answer(403)


class AccessPhase:
    """`access:` rules: a client that the first matching rule denies gets 403."""

    __slots__ = ("name", "rules")

    def __init__(self, rules: tuple[AccessRule, ...]) -> None:
        self.name = "access denied"
        self.rules = AccessRules(rules)

    def check(self, request: Request) -> Verdict:
        return None if self.rules.allows(request.client_ip) else _FORBIDDEN


def rate_policy(zone: ZoneConfig) -> bytes:
    """The RateLimit-Policy field (IETF httpapi ratelimit headers): quota q per w seconds."""
    quota = zone.rate * zone.rate_window
    window = zone.rate_window
    if quota < 1:  # below one request per window: widen the window
        window = math.ceil(1 / zone.rate)
        quota = 1.0
    return b'"%s";q=%d;w=%d' % (zone.name.encode(), round(quota), window)


class RateLimitPhase:
    """`limit_req`: nginx's leaky bucket per key, shared by every worker of the instance
    (and by every instance for a `shared` zone: edgeproxy.limits.shared).

    Within the burst, a request over the rate is delayed (unless nodelay, or within the
    first `delay`); beyond it, refused with the zone's status, Retry-After and the
    RateLimit fields. dry_run logs what it would do and does nothing."""

    __slots__ = ("dry_run", "key_of", "name", "policy", "stats", "status", "zone")

    def __init__(self, zone: RateCounter) -> None:
        config = zone.config
        self.name = f"limiting requests by zone {config.name!r}"
        self.zone = zone
        self.key_of = key_function(config.key)
        self.status = config.reject_status
        self.dry_run = config.dry_run
        self.policy = rate_policy(config)
        self.stats: ZoneStats | None = None  # set where the worker counts metrics

    def check(self, request: Request) -> Verdict:
        key = self.key_of(request.client_ip, request.head.headers)
        if key is None:
            return None
        outcome = self.zone.take(key, now_ms())
        kind = outcome.kind
        if kind == PASS:
            return None
        if kind == DELAY:
            if self.dry_run:
                log.info("client %s: would delay %d ms (dry run) by zone %r",
                         request.client_ip, outcome.wait_ms, self.zone.config.name)  # fmt: skip
                return None
            wait = max(1, math.ceil(outcome.wait_ms / 1000))
            if self.stats is not None:
                self.stats.delayed()
            return Delay(
                outcome.wait_ms / 1000,
                [
                    (b"RateLimit-Policy", self.policy),
                    (b"RateLimit", b'"%s";r=0;t=%d' % (self.zone.config.name.encode(), wait)),
                ],
            )
        retry = max(1, math.ceil(outcome.wait_ms / 1000))
        log.info("client %s: limiting requests%s, excess %.3f by zone %r", request.client_ip,
                 ", dry run" if self.dry_run else "", outcome.excess / 1000,
                 self.zone.config.name)  # fmt: skip
        if self.dry_run:
            return None
        if self.stats is not None:
            self.stats.rejected()
        return Answer(
            self.status,
            [
                (b"Retry-After", b"%d" % retry),
                (b"RateLimit-Policy", self.policy),
                (b"RateLimit", b'"%s";r=0;t=%d' % (self.zone.config.name.encode(), retry)),
            ],
        )


class ConnectionLimitPhase:
    """`limit_conn`: at most `connections` open connections per key, every worker counted.

    The key is the TCP peer's (the connection is counted before any request names a client
    through X-Forwarded-For). A worker's slots are given back as its connections end, and
    by the master if the worker dies (edgeproxy.limits.zones.ZoneStore.reclaim)."""

    __slots__ = ("answer", "key_of", "name", "stats", "zone")

    def __init__(self, zone: ConnectionCounter) -> None:
        config = zone.config
        self.name = f"limiting connections by zone {config.name!r}"
        self.zone = zone
        self.key_of = address_key(config.key)
        self.answer = Answer(config.reject_status)
        self.stats: ZoneStats | None = None  # set where the worker counts metrics

    def accept(self, peer_ip: str) -> Answer | None:
        key = self.key_of(peer_ip)
        if key is None:
            return None
        held = self.zone.acquire(key, now_ms())
        config = self.zone.config
        if held < 0:
            log.error("zone %r is full: refusing %s", config.name, peer_ip)
        elif held < config.connections:
            return None
        elif config.dry_run:
            log.info("client %s: would refuse (dry run) by zone %r", peer_ip, config.name)
            return None
        if self.stats is not None:
            self.stats.rejected()
        return self.answer

    def release(self, peer_ip: str) -> None:
        key = self.key_of(peer_ip)
        if key is not None:
            self.zone.release(key)

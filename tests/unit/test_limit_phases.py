"""The limit phases' verdicts on a request: pass, Delay, or the refusal with its fields;
dry_run never limits. The route is a bare one: only the client address and the headers
are read."""

from __future__ import annotations

import ipaddress
from typing import Any

from edgeproxy.config import parse_config
from edgeproxy.config.model import AccessRule, ZoneConfig
from edgeproxy.http.events import RequestHead
from edgeproxy.limits.zones import ZoneStore
from edgeproxy.server.body import RequestBody
from edgeproxy.server.limit_phases import (
    AccessPhase,
    ConnectionLimitPhase,
    RateLimitPhase,
    rate_policy,
)
from edgeproxy.server.request import Delay, Request, Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler

_SERVER = parse_config(
    'servers: [{listen: ["127.0.0.1:0"], locations: [{path: /, return: {status: 200}}]}]', "t"
).servers[0]
_ROUTE = Route(_SERVER, None, AnswerHandler(Answer(200)), (), b"")


def request(client_ip: str, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    head = RequestHead(b"GET", b"/", b"1.1", headers or [])
    return Request(head, _ROUTE, RequestBody(0, ""), client_ip, 0.0)


def zone(**fields: Any) -> ZoneConfig:
    return ZoneConfig(name="api", kind="rate", **fields)


def test_a_refusal_carries_retry_after_and_the_ratelimit_fields() -> None:
    phase = RateLimitPhase(ZoneStore().rate(zone(rate=2.0, burst=1, nodelay=True)))
    assert phase.check(request("192.0.2.1")) is None
    assert phase.check(request("192.0.2.1")) is None
    refused = phase.check(request("192.0.2.1"))
    assert isinstance(refused, Answer) and refused.status == 429
    fields = dict(refused.headers)
    assert fields[b"Retry-After"] == b"1"  # 500 ms at 2 r/s, rounded up
    assert fields[b"RateLimit-Policy"] == b'"api";q=2;w=1'
    assert fields[b"RateLimit"] == b'"api";r=0;t=1'
    assert phase.check(request("192.0.2.2")) is None


def test_excess_within_the_burst_is_a_delay_and_the_status_is_the_zones() -> None:
    phase = RateLimitPhase(ZoneStore().rate(zone(rate=10.0, burst=1, status=503)))
    assert phase.check(request("192.0.2.1")) is None
    delayed = phase.check(request("192.0.2.1"))
    assert isinstance(delayed, Delay) and 0.09 <= delayed.seconds <= 0.1
    refused = phase.check(request("192.0.2.1"))
    assert isinstance(refused, Answer) and refused.status == 503


def test_dry_run_neither_delays_nor_refuses() -> None:
    phase = RateLimitPhase(ZoneStore().rate(zone(rate=1.0, dry_run=True)))
    assert [phase.check(request("192.0.2.1")) for _ in range(3)] == [None, None, None]


def test_a_header_key_limits_by_header_and_not_without_it() -> None:
    phase = RateLimitPhase(ZoneStore().rate(zone(key="header:x-api-key", rate=1.0, nodelay=True)))
    keyed = [(b"x-api-key", b"k")]
    assert phase.check(request("192.0.2.1", keyed)) is None
    assert isinstance(phase.check(request("192.0.2.2", keyed)), Answer)  # same key, other IP
    assert [phase.check(request("192.0.2.1")) for _ in range(3)] == [None, None, None]


def test_rate_policy_of_per_minute_and_slow_rates() -> None:
    assert rate_policy(zone(rate=10.0, rate_window=60)) == b'"api";q=600;w=60'
    assert rate_policy(zone(rate=1 / 120, rate_window=60)) == b'"api";q=1;w=120'


def test_access_phase_answers_403_to_a_denied_client() -> None:
    phase = AccessPhase((AccessRule(False, ipaddress.ip_network("192.0.2.0/24")),))
    answer = phase.check(request("192.0.2.9"))
    assert isinstance(answer, Answer) and answer.status == 403
    assert phase.check(request("198.51.100.1")) is None


def test_connection_phase_refuses_past_the_count_and_releases() -> None:
    config = ZoneConfig(name="c", kind="connections", connections=1)
    phase = ConnectionLimitPhase(ZoneStore().connections(config))
    assert phase.accept("192.0.2.1") is None
    refused = phase.accept("192.0.2.1")
    assert isinstance(refused, Answer) and refused.status == 503
    phase.release("192.0.2.1")
    assert phase.accept("192.0.2.1") is None
    # A unix-socket client has no address to count by: not limited, as nginx.
    assert [phase.accept("unix:") for _ in range(3)] == [None, None, None]

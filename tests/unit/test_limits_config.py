"""The `limits:` zones, `limit_req`, `limit_conn` and `access` in the config: what they
read into, and each mistake refused at its line."""

from __future__ import annotations

import ipaddress

import pytest

from edgeproxy.config.model import AccessRule, ZoneConfig
from tests.unit.test_config import error, parse

ZONES = """\
limits:
  per_ip: {key: client_ip/24, rate: 600r/m, burst: 20, delay: 5, status: 503}
  api: {key: header:X-Api-Key, rate: 10r/s, nodelay: true, dry_run: true, size: 1m}
  conns: {connections: 20}
"""


def with_zones(server_keys: str = "", location_keys: str = "", zones: str = ZONES) -> str:
    return (
        zones
        + 'servers:\n  - listen: "127.0.0.1:0"\n'
        + server_keys
        + "    locations:\n      - path: /\n        return: {status: 200}\n"
        + location_keys
    )


def test_zones_read_into_their_model_with_nginx_defaults() -> None:
    config = parse(with_zones())
    per_ip, api, conns = (config.limits[n] for n in ("per_ip", "api", "conns"))
    assert per_ip == ZoneConfig(
        name="per_ip", kind="rate", key="client_ip/24", rate=10.0, rate_window=60,
        burst=20, delay=5, status=503,
    )  # fmt: skip
    assert per_ip.size == 10 * 1024 * 1024 and per_ip.reject_status == 503
    assert api.key == "header:x-api-key" and api.nodelay and api.dry_run
    assert api.size == 1024 * 1024 and api.reject_status == 429 and api.burst == 0
    assert conns.kind == "connections" and conns.connections == 20
    assert conns.reject_status == 503


def test_servers_and_locations_name_their_zones_and_rules() -> None:
    config = parse(
        with_zones(
            "    limit_conn: conns\n    limit_req: per_ip\n    access: [deny 192.0.2.0/24]\n",
            "        limit_req: api\n        access: [allow 2001:db8::/32, deny all]\n",
        )
    )
    server = config.servers[0]
    assert server.limit_conn is config.limits["conns"]
    assert server.limit_req is config.limits["per_ip"]
    assert server.access == (AccessRule(False, ipaddress.ip_network("192.0.2.0/24")),)
    location = server.locations[0]
    assert location.limit_req is config.limits["api"]
    assert location.access == (
        AccessRule(True, ipaddress.ip_network("2001:db8::/32")),
        AccessRule(False, None),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            with_zones(zones="limits:\n  z: {key: client_ip}\n"),
            "t.yaml:2: limits.z: needs rate (a request-rate zone) or connections "
            "(a connection zone)",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, connections: 2}\n"),
            "t.yaml:2: limits.z.connections: only one of rate, connections; rate is given",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 10/s}\n"),
            "t.yaml:2: limits.z.rate: expected a rate like 10r/s or 600r/m, got '10/s'",
        ),
        (
            with_zones(zones="limits:\n  z: {connections: 2, burst: 3}\n"),
            "t.yaml:2: limits.z.burst: only for a request-rate zone (one with `rate`)",
        ),
        (
            with_zones(zones="limits:\n  z: {connections: 2, key: 'header:x-a'}\n"),
            "t.yaml:2: limits.z.key: a connection zone is keyed by the client address",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, delay: 2, nodelay: true}\n"),
            "t.yaml:2: limits.z.delay: delay and nodelay exclude each other",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, key: ip}\n"),
            "t.yaml:2: limits.z.key: expected client_ip, client_ip/N or header:NAME, got 'ip'",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, key: client_ip/33/200}\n"),
            "t.yaml:2: limits.z.key: bad prefix in 'client_ip/33/200': IPv4 1..32, IPv6 1..128",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, size: 1k}\n"),
            "t.yaml:2: limits.z.size: must be at least 32k",
        ),
        (
            with_zones(zones="limits:\n  z: {rate: 1r/s, status: 200}\n"),
            "t.yaml:2: limits.z.status: must be 400..599, got 200",
        ),
        (
            with_zones("    limit_req: nope\n"),
            "t.yaml:7: servers[0].limit_req: no zone named 'nope' in limits",
        ),
        (
            with_zones("    limit_conn: per_ip\n"),
            "t.yaml:7: servers[0].limit_conn: zone 'per_ip' is not a connection zone",
        ),
        (
            with_zones(location_keys="        limit_req: conns\n"),
            "t.yaml:10: servers[0].locations[0].limit_req: zone 'conns' is not a request-rate zone",
        ),
        (
            with_zones(location_keys="        access: [permit all]\n"),
            "t.yaml:10: servers[0].locations[0].access[0]: expected 'allow ADDRESS', "
            "'deny ADDRESS' or '... all', got 'permit all'",
        ),
        (
            with_zones(location_keys="        access: [deny 300.1.1.1]\n"),
            "t.yaml:10: servers[0].locations[0].access[0]: expected an IP address, a CIDR "
            "network or all, got '300.1.1.1'",
        ),
    ],
)
def test_mistakes_are_refused_at_their_line(text: str, expected: str) -> None:
    assert error(text) == expected

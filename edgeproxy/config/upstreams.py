"""The `upstreams:` mapping: named pools of peers."""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode

from edgeproxy.config.model import (
    Address,
    HealthCheckConfig,
    PeerConfig,
    QueueConfig,
    UpstreamConfig,
)
from edgeproxy.config.nodes import (
    Fields,
    Invalid,
    address,
    integer,
    items,
    nonempty_items,
    string,
    word,
)
from edgeproxy.config.schema import (
    Block,
    Choice,
    Duration,
    Flag,
    Got,
    Integer,
    Key,
    Scope,
    Section,
    read_each,
)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_NEXT_UPSTREAM = ("error", "timeout", "http_502", "http_503", "http_504", "non_idempotent", "off")


def _peer_address(node: Node, path: str, scope: Scope) -> Address:
    return address(node, path, listen=False)


def _next_upstream(node: Node, path: str, scope: Scope) -> frozenset[str]:
    words = [word(n, p, _NEXT_UPSTREAM) for n, p in nonempty_items(node, path, single_ok=True)]
    if "off" in words:
        if len(words) > 1:
            raise Invalid(node, path, "off cannot be combined with other conditions")
        return frozenset()  # off: never retry; stored as "no condition", not as a word
    return frozenset(words)


# One backend of a pool, when written as a mapping (a plain "host:port" is its address).
PEER = Block(
    Key("weight", Integer(minimum=1)),
    Key("max_fails", Integer(minimum=0)),
    Key("max_conns", Integer(minimum=0)),  # 0 = unlimited
    Key("fail_timeout", Duration()),
    Key("backup", Flag()),
    Key("address", _peer_address, required=True),
    Key("down", Flag()),
)


def _peers(node: Node, path: str, scope: Scope) -> tuple[PeerConfig, ...]:
    peers = read_each(nonempty_items(node, path), lambda n, p: _peer(n, p, scope), scope)
    if all(peer.backup for peer in peers):
        raise Invalid(node, path, "every server is a backup; one must not be")
    return tuple(peers)


def _peer(node: Node, path: str, scope: Scope) -> PeerConfig:
    if not isinstance(node, MappingNode):  # a plain "host:port" item
        return PeerConfig(address(node, path, listen=False))
    return PeerConfig(**PEER.read(node, path, scope).values)


# `queue:` of a pool: requests waiting for a max_conns place.
QUEUE = Block(
    Key("size", Integer(minimum=1), required=True),
    Key("timeout", Duration()),
)


def _probe_path(node: Node, path: str, scope: Scope) -> str:
    value = string(node, path)
    if not value.startswith("/") or any(c in value for c in " \r\n\t"):
        raise Invalid(node, path, f"must start with / and hold no spaces, got {value!r}")
    return value


def _status_ranges(node: Node, path: str, scope: Scope) -> tuple[tuple[int, int], ...]:
    """`200`, `"200-399"`, or a list of either: the statuses a probe counts as good."""
    found = items(node, path, single_ok=True)
    if not found:
        raise Invalid(node, path, "must not be empty")
    ranges = []
    for item, item_path in found:
        if isinstance(item, ScalarNode) and "-" in str(item.value):
            low, _, high = str(item.value).partition("-")
            if not (low.strip().isdigit() and high.strip().isdigit()):
                raise Invalid(
                    item,
                    item_path,
                    f"expected a status or a range like 200-399, got {item.value!r}",
                )
            first, last = int(low), int(high)
        else:
            first = last = integer(item, item_path, 100, 599)
        if not 100 <= first <= last <= 599:
            raise Invalid(
                item, item_path, f"expected statuses within 100-599, low first, got {item.value!r}"
            )
        ranges.append((first, last))
    return tuple(ranges)


# `health_check:` of a pool (defaults and their precedents in model.HealthCheckConfig).
HEALTH_CHECK = Block(
    Key("path", _probe_path),
    Key("interval", Duration()),
    Key("timeout", Duration()),
    Key("fails", Integer(minimum=1)),
    Key("passes", Integer(minimum=1)),
    Key("status", _status_ranges),
)


def _health_check(node: Node, path: str, scope: Scope) -> HealthCheckConfig:
    got = HEALTH_CHECK.read(node, path, scope)
    check = HealthCheckConfig(**got.values)
    if check.timeout >= check.interval:
        given = "timeout" in got.values
        raise Invalid(
            got.node_of("timeout") if given else node,
            got.sub("timeout"),
            f"must be below interval ({check.interval:g}s), so that probes never overlap"
            + ("" if given else f"; the default is {check.timeout:g}s: set a shorter one"),
        )
    return check


# One pool: `upstreams: NAME: {...}`.
UPSTREAM = Block(
    Key("balance", Choice(("round_robin", "least_conn", "ip_hash", "random_two"))),
    Key("protocol", Choice(("http", "uwsgi"))),
    Key("keepalive", Integer(minimum=0)),
    Key("keepalive_timeout", Duration(zero_ok=True)),
    Key("connect_timeout", Duration()),
    Key("read_timeout", Duration()),
    Key("next_upstream", _next_upstream),
    Key("next_upstream_tries", Integer(minimum=1)),
    Key("servers", _peers, required=True),
    Key("health_check", _health_check),
    Key("queue", Section(QUEUE, QueueConfig)),
)


def read_upstreams(node: Node, path: str, scope: Scope) -> dict[str, UpstreamConfig]:
    """The pools that read well: a bad one is left out, with its errors kept, and the others
    stay known to the locations that name them (the top block fails all the same)."""
    f = Fields(node, path, None, scope.problems)  # any name is a key
    result = {}
    for name, value in f.values.items():
        with scope.problems.collect():
            if not _NAME_RE.fullmatch(name):
                what = "upstream names may use only letters, digits, '_', '.', '-'"
                raise f.key_error(name, what)
            result[name] = _upstream(name, UPSTREAM.read(value, f.sub(name), scope))
    return result


def _upstream(name: str, got: Got) -> UpstreamConfig:
    if "queue" in got.values and not any(p.max_conns for p in got.values["servers"]):
        raise Invalid(
            got.node_of("queue"),
            got.sub("queue"),
            "no server has max_conns: no request would ever wait",
        )
    return UpstreamConfig(name=name, **got.values)

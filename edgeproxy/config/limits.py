"""The `limits:` zones, and the keys that use them: `limit_req`, `limit_conn`, `access`."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Literal

from yaml.nodes import Node, ScalarNode

from edgeproxy.config.model import AccessRule, SharedStateConfig, ZoneConfig
from edgeproxy.config.nodes import Fields, Invalid, items, string
from edgeproxy.config.schema import (
    Block,
    Choice,
    Duration,
    Flag,
    Got,
    Integer,
    Key,
    OneOf,
    Scope,
    Section,
    Size,
    read_each,
)
from edgeproxy.config.units import parse_rate

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# client_ip, client_ip/24 (IPv4 prefix; IPv6 then /64), client_ip/24/48, client_ip/64
_PREFIX_KEY_RE = re.compile(r"client_ip/(\d{1,3})(?:/(\d{1,3}))?", re.ASCII)
_HEADER_KEY_RE = re.compile(r"header:[A-Za-z0-9!#$%&'*+.^_`|~-]+", re.ASCII)
MIN_ZONE_SIZE = 32 * 1024  # a few hundred keys: below this a zone is a typo (nginx: 32k too)


def _key(node: Node, path: str, scope: Scope) -> str:
    text = string(node, path)
    if text == "client_ip" or _HEADER_KEY_RE.fullmatch(text):
        return text.lower() if text.startswith("header:") else text
    m = _PREFIX_KEY_RE.fullmatch(text)
    if m is not None:
        first, second = int(m.group(1)), m.group(2)
        if not 1 <= first <= 128 or (
            second is not None and not (first <= 32 and 1 <= int(second) <= 128)
        ):
            raise Invalid(node, path, f"bad prefix in {text!r}: IPv4 1..32, IPv6 1..128")
        return text
    raise Invalid(node, path, f"expected client_ip, client_ip/N or header:NAME, got {text!r}")


def _rate(node: Node, path: str, scope: Scope) -> tuple[float, int]:
    text = string(node, path) if isinstance(node, ScalarNode) else ""
    try:
        rate = parse_rate(text)
    except ValueError as e:
        raise Invalid(node, path, str(e)) from None
    return rate, 60 if text.strip().endswith("/m") else 1


def _status(node: Node, path: str, scope: Scope) -> int:
    return Integer(minimum=400, maximum=599)(node, path, scope)


# One zone: `limits: NAME: {...}`; `rate` makes a request-rate zone, `connections` a
# connection zone.
ZONE = Block(
    OneOf(
        ("rate", "connections"),
        missing="needs rate (a request-rate zone) or connections (a connection zone)",
        extra="only one of rate, connections; {} is given",
    ),
    Key("key", _key),
    Key("rate", _rate),
    Key("burst", Integer(minimum=0)),
    Key("delay", Integer(minimum=0)),
    Key("nodelay", Flag()),
    Key("connections", Integer(minimum=1)),
    Key("status", _status),
    Key("dry_run", Flag()),
    Key("size", Size()),
    Key("shared", Flag()),
)
_RATE_ONLY = ("burst", "delay", "nodelay")


def read_zones(node: Node, path: str, scope: Scope) -> dict[str, ZoneConfig]:
    """The zones that read well: a bad one is left out, with its errors kept, and the others
    stay known to the keys that name them (the top block fails all the same)."""
    f = Fields(node, path, None, scope.problems)  # any name is a key
    zones = {}
    for name, value in f.values.items():
        with scope.problems.collect():
            if not _NAME_RE.fullmatch(name):
                what = "zone names may use only letters, digits, '_', '.', '-'"
                raise f.key_error(name, what)
            zones[name] = _zone(name, ZONE.read(value, f.sub(name), scope), scope)
    return zones


def _zone(name: str, got: Got, scope: Scope) -> ZoneConfig:
    values = dict(got.values)
    kind: Literal["rate", "connections"]
    if values.pop("shared", False):
        shared_state = scope.get("shared_state")
        if not isinstance(shared_state, SharedStateConfig):
            what = "needs shared_state (a Redis) at the top level"
            where = got.fields.keys["shared"]
            raise Invalid(where, got.sub("shared"), what, depends_on="shared_state")
        values["shared"] = shared_state
    if "connections" in values:
        for key in _RATE_ONLY:
            if key in values:
                raise got.fields.key_error(key, "only for a request-rate zone (one with `rate`)")
        if str(values.get("key", "")).startswith("header:"):
            raise got.fields.key_error("key", "a connection zone is keyed by the client address")
        kind = "connections"
    else:
        kind = "rate"
        rate: tuple[float, int] = values.pop("rate")
        values["rate"], values["rate_window"] = rate
        if "delay" in values and values.get("nodelay"):
            raise got.fields.key_error("delay", "delay and nodelay exclude each other")
    size = values.get("size")
    if isinstance(size, int) and size < MIN_ZONE_SIZE:
        raise got.fields.key_error("size", f"must be at least {MIN_ZONE_SIZE // 1024}k")
    return ZoneConfig(name=name, kind=kind, **values)


_URL_SCHEMES = ("redis", "rediss", "unix")


def _redis_url(node: Node, path: str, scope: Scope) -> str:
    """The shape of a Redis URL (`-t` checks it; whether Redis answers is the workers' to say)."""
    text = string(node, path)
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port  # raises on a port that is not a number or out of range
    except ValueError as e:
        raise Invalid(node, path, f"bad Redis URL {text!r}: {e}") from None
    if url.scheme not in _URL_SCHEMES:
        raise Invalid(
            node, path, f"expected redis://HOST:PORT/DB, rediss://... or unix:///PATH, got {text!r}"
        )
    if url.scheme == "unix":
        if url.hostname or not url.path.startswith("/"):
            raise Invalid(node, path, f"a unix:// URL needs an absolute socket path: {text!r}")
        db = dict(urllib.parse.parse_qsl(url.query)).get("db", "0")
    else:
        if not url.hostname:
            raise Invalid(node, path, f"a {url.scheme}:// URL needs a host: {text!r}")
        db = url.path.lstrip("/") or "0"
        if port == 0:
            raise Invalid(node, path, f"bad port in {text!r}")
    if not db.isdigit():
        raise Invalid(node, path, f"the database is a number, got {db!r} in {text!r}")
    return text


def _prefix(node: Node, path: str, scope: Scope) -> str:
    text = string(node, path)
    if not text or any(c.isspace() for c in text):
        raise Invalid(node, path, f"a key prefix is one word, got {text!r}")
    return text


SHARED_STATE = Block(
    Key("redis", _redis_url, required=True),
    Key("timeout", Duration()),
    Key("on_error", Choice(("local", "allow", "deny"))),
    Key("prefix", _prefix),
    Key("lease", Duration()),
)
read_shared_state = Section(SHARED_STATE, SharedStateConfig)


def zone_reader(kind: str, what: str) -> Callable[[Node, str, Scope], ZoneConfig]:
    """A `limit_req` / `limit_conn` value: the name of a zone of that kind."""

    def read(node: Node, path: str, scope: Scope) -> ZoneConfig:
        name = string(node, path)
        zones = scope.get("limits")
        zone = zones.get(name) if isinstance(zones, Mapping) else None
        if not isinstance(zone, ZoneConfig):
            missing = f"no zone named {name!r} in limits"
            raise Invalid(node, path, missing, depends_on=f"limits.{name}")
        if zone.kind != kind:
            raise Invalid(node, path, f"zone {name!r} is not {what}")
        return zone

    return read


def _rule(node: Node, path: str) -> AccessRule:
    text = string(node, path).strip()
    verb, _, target = text.partition(" ")
    target = target.strip()
    if verb not in ("allow", "deny") or not target:
        raise Invalid(
            node, path, f"expected 'allow ADDRESS', 'deny ADDRESS' or '... all', got {text!r}"
        )
    if target == "all":
        return AccessRule(verb == "allow", None)
    try:
        network = ipaddress.ip_network(target, strict=False)
    except ValueError:
        raise Invalid(
            node, path, f"expected an IP address, a CIDR network or all, got {target!r}"
        ) from None
    return AccessRule(verb == "allow", network)


def read_access(node: Node, path: str, scope: Scope) -> tuple[AccessRule, ...]:
    return tuple(read_each(items(node, path, single_ok=True), _rule, scope))

"""The `http:` defaults and the `servers:` list: virtual servers and their locations."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Literal

from yaml.nodes import MappingNode, Node, ScalarNode

from edgeproxy.config.limits import read_access, zone_reader
from edgeproxy.config.model import (
    Address,
    HandlerSpec,
    HttpSettings,
    IPNetwork,
    Location,
    ProxyPass,
    ReturnAction,
    ServerConfig,
    StaticFiles,
)
from edgeproxy.config.nodes import Invalid, address, duration, items, nonempty_items, string
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
    Size,
    names_in,
    read_each,
)
from edgeproxy.config.tls import read_tls


def _types(node: Node, path: str, scope: Scope) -> tuple[tuple[str, str], ...]:
    if not isinstance(node, MappingNode):
        raise Invalid(node, path, "expected a mapping of extension: content type")
    types: list[tuple[str, str]] = []
    for key_node, value_node in node.value:
        ext = string(key_node, path).lower().lstrip(".")
        value = string(value_node, f"{path}.{ext}")
        if not _TOKEN_RE.fullmatch(ext):
            raise Invalid(key_node, path, f"bad extension {ext!r}")
        if not _MEDIA_TYPE_RE.fullmatch(value):
            raise Invalid(value_node, f"{path}.{ext}", f"bad content type {value!r}")
        types.append((ext, value))
    return tuple(types)


def _charset(node: Node, path: str, scope: Scope) -> str | None:
    if isinstance(node, ScalarNode) and node.value == "off":  # YAML 1.1 reads it as false
        return None
    text = string(node, path)
    if not _TOKEN_RE.fullmatch(text):
        raise Invalid(node, path, f"bad charset {text!r}")
    return text


_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_MEDIA_TYPE_RE = re.compile(
    r"[a-z0-9][a-z0-9!#$&.+^_-]*/[a-z0-9][a-z0-9!#$&.+^_-]*(; *[a-z]+=[A-Za-z0-9._-]+)?"
)

# The `http:` block; a server may set any of these keys itself.
HTTP = Block(
    Key("client_max_body_size", Size()),
    Key("client_body_buffer_size", Size()),
    Key("client_header_buffer_size", Size()),
    Key("client_header_timeout", Duration()),
    Key("client_body_timeout", Duration()),
    Key("client_body_min_rate", Size(zero_ok=True)),  # bytes per second; 0 = no minimum
    Key("send_timeout", Duration()),
    Key("keepalive_timeout", Duration(zero_ok=True)),  # 0 = no keep-alive
    Key("keepalive_requests", Integer(minimum=1)),
    Key("proxy_buffering", Flag()),
    Key("proxy_max_temp_file_size", Size(zero_ok=True)),  # 0 = never spool
    Key("proxy_buffers_size", Size()),
    Key("types", _types),
    Key("charset", _charset),
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A host name, optionally with a leading `*.` wildcard label (nginx's "*.example.com").
_SERVER_NAME_RE = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_MATCH_KINDS: dict[str, Literal["prefix", "exact", "regex"]] = {
    "path": "prefix",
    "exact": "exact",
    "regex": "regex",
}
_HANDLERS = ("proxy_pass", "return", "root", "alias")
# Keys that only a static location (root or alias) may have.
_STATIC_KEYS = (
    *("expires", "index", "autoindex", "gzip_static", "disable_symlinks", "try_files"),
    "internal",
)


# --- locations ------------------------------------------------------------------------


def _route(node: Node, path: str, scope: Scope) -> str:
    pattern = string(node, path)
    if not pattern.startswith("/"):
        raise Invalid(node, path, f"must start with /, got {pattern!r}")
    return pattern


def _route_regex(node: Node, path: str, scope: Scope) -> re.Pattern[str]:
    pattern = string(node, path)
    try:
        return re.compile(pattern)
    except re.error as e:
        raise Invalid(node, path, f"bad regex {pattern!r}: {e}") from None


def _proxy_pass(node: Node, path: str, scope: Scope) -> ProxyPass:
    upstream = string(node, path)
    if upstream not in names_in(scope, "upstreams"):
        what = f"no upstream named {upstream!r}"
        raise Invalid(node, path, what, depends_on=f"upstreams.{upstream}")
    return ProxyPass(upstream)


# The variables a `return` may use in location and body (nginx's names and meanings).
RETURN_VARIABLES = ("scheme", "host", "request_uri")
_VARIABLE_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _with_variables(node: Node, path: str, scope: Scope) -> str:
    text = string(node, path)
    for found in _VARIABLE_RE.finditer(text):
        if found.group(1) not in RETURN_VARIABLES:
            known = ", ".join("$" + name for name in RETURN_VARIABLES)
            raise Invalid(node, path, f"unknown variable ${found.group(1)} (known: {known})")
    return text


def _body(node: Node, path: str, scope: Scope) -> bytes:
    return _with_variables(node, path, scope).encode()


# `return: {status, body, location}`
RETURN = Block(
    Key("status", Integer(minimum=200, maximum=599), required=True),
    Key("body", _body),
    Key("location", _with_variables),
)


def _return(node: Node, path: str, scope: Scope) -> ReturnAction:
    got = RETURN.read(node, path, scope)
    action = ReturnAction(**got.values)
    if action.location is None and action.status in _REDIRECTS:
        raise Invalid(node, got.sub("location"), f"required with status {action.status}")
    return action


def _directory(node: Node, path: str, scope: Scope) -> str:
    directory = string(node, path)
    if not directory.startswith("/"):
        raise Invalid(node, path, f"must be an absolute path, got {directory!r}")
    return directory


# A ten-year max-age (nginx's `expires max` sends the same).
EXPIRES_MAX = 10 * 365 * 24 * 3600.0


def _expires(node: Node, path: str, scope: Scope) -> float | None:
    text = str(node.value) if isinstance(node, ScalarNode) else None
    if text == "off":
        return None
    if text == "max":
        return EXPIRES_MAX
    return duration(node, path, zero_ok=True)


def _index(node: Node, path: str, scope: Scope) -> tuple[str, ...]:
    names = []
    for item, p in items(node, path, single_ok=True):
        name = string(item, p)
        if not name or "/" in name or name.startswith("."):
            raise Invalid(item, p, f"expected a file name, got {name!r}")
        names.append(name)
    return tuple(names)


def _try_files(node: Node, path: str, scope: Scope) -> tuple[str, ...]:
    """Paths (`$uri` stands for the request's path) tried in order; the last may instead be
    `@NAME` (hand the request to upstream NAME) or `=CODE` (answer with that status)."""
    found = items(node, path)
    if len(found) < 2:
        raise Invalid(node, path, "needs at least two entries (paths, then a fallback)")
    entries: list[str] = []
    for i, (item, p) in enumerate(found):
        entry = string(item, p)
        last = i == len(found) - 1
        if entry.startswith("@"):
            if not last:
                raise Invalid(item, p, "an @upstream entry can only be the last")
            if entry[1:] not in names_in(scope, "upstreams"):
                what = f"no upstream named {entry[1:]!r}"
                raise Invalid(item, p, what, depends_on=f"upstreams.{entry[1:]}")
        elif entry.startswith("="):
            if not last:
                raise Invalid(item, p, "an =CODE entry can only be the last")
            if not (entry[1:].isdigit() and 400 <= int(entry[1:]) <= 599):
                raise Invalid(item, p, f"expected =CODE with a 4xx or 5xx code, got {entry!r}")
        elif not entry.startswith(("/", "$uri")):
            raise Invalid(item, p, f"expected a path starting with / or $uri, got {entry!r}")
        entries.append(entry)
    return tuple(entries)


def _static(got: Got, match: str, pattern: str) -> StaticFiles:
    values = got.values
    options = {key: values[key] for key in _STATIC_KEYS if key in values}
    if "root" in values:
        return StaticFiles(values["root"], **options)
    if match == "regex":
        raise Invalid(got.node_of("alias"), got.sub("alias"), "not with a regex location")
    strip = tuple(s for s in pattern.split("/") if s not in ("", "."))
    return StaticFiles(values["alias"], strip, alias_file=match == "exact", **options)


# One routing rule: one match, one handler.
LOCATION = Block(
    Key("path", _route),
    Key("exact", _route),
    Key("regex", _route_regex),
    OneOf(
        tuple(_MATCH_KINDS),
        missing="needs one of path (prefix), exact, regex",
        extra="only one of path, exact, regex; {} is given",
    ),
    Key("proxy_pass", _proxy_pass),
    Key("return", _return),
    Key("root", _directory),
    Key("alias", _directory),
    OneOf(
        _HANDLERS,
        missing="needs a handler: proxy_pass, return, root or alias",
        extra="only one handler; {} is given",
    ),
    Key("expires", _expires),
    Key("index", _index),
    Key("gzip_static", Flag()),
    Key("disable_symlinks", Choice(("outside_root", "on", "off"))),
    Key("autoindex", Flag()),
    Key("try_files", _try_files),
    Key("internal", Flag()),
    Key("limit_req", zone_reader("rate", "a request-rate zone")),
    Key("access", read_access),
)


def _locations(node: Node, path: str, scope: Scope) -> tuple[Location, ...]:
    locations = nonempty_items(node, path)
    return tuple(read_each(locations, lambda n, p: _location(LOCATION.read(n, p, scope)), scope))


def _location(got: Got) -> Location:
    match_key = next(key for key in _MATCH_KINDS if key in got.values)
    pattern = got.values[match_key]
    regex = None
    if isinstance(pattern, re.Pattern):
        regex, pattern = pattern, pattern.pattern
    handler_key = next(key for key in _HANDLERS if key in got.values)
    handler: HandlerSpec
    if handler_key in ("root", "alias"):
        handler = _static(got, _MATCH_KINDS[match_key], pattern)
    else:
        handler = got.values[handler_key]
        for key in _STATIC_KEYS:
            if key in got.values:
                raise Invalid(got.node_of(key), got.sub(key), "only with root or alias")
    return Location(
        match=_MATCH_KINDS[match_key],
        pattern=pattern,
        where=got.path,
        handler=handler,
        regex=regex,
        access=got.values.get("access"),
        limit_req=got.values.get("limit_req"),
    )


# --- servers ---------------------------------------------------------------------------


def _listen_address(node: Node, path: str, scope: Scope) -> Address:
    return address(node, path, listen=True)


# A listen entry written as a mapping (a plain string is its address).
LISTEN = Block(
    Key("address", _listen_address, required=True),
    Key("proxy_protocol", Flag()),  # a PROXY protocol v1/v2 header opens each connection
)


def _listen(node: Node, path: str, scope: Scope) -> dict[Address, tuple[Node, str, bool]]:
    """Each address, where it is written, and whether it expects a PROXY header."""
    written = nonempty_items(node, path, single_ok=True)
    entries = read_each(written, lambda n, p: _listen_entry(n, p, scope), scope)
    listen: dict[Address, tuple[Node, str, bool]] = {}
    for addr, item, p, proxy_protocol in entries:
        if addr in listen:  # would fail later, at bind, with a less helpful message
            raise Invalid(item, p, f"{addr} is listed twice")
        listen[addr] = (item, p, proxy_protocol)
    return listen


def _listen_entry(item: Node, p: str, scope: Scope) -> tuple[Address, Node, str, bool]:
    if isinstance(item, MappingNode):
        values = LISTEN.read(item, p, scope).values
        addr: Address = values["address"]
        proxy_protocol = bool(values.get("proxy_protocol", False))
    else:
        addr, proxy_protocol = _listen_address(item, p, scope), False
    if proxy_protocol and addr.kind == "unix":
        raise Invalid(item, p, "proxy_protocol is for TCP addresses")
    return addr, item, p, proxy_protocol


def _server_names(node: Node, path: str, scope: Scope) -> dict[str, tuple[Node, str]]:
    """Each name (lowercased) with where it was written, for the errors about collisions."""
    names: dict[str, tuple[Node, str]] = {}
    for item, p in items(node, path, single_ok=True):
        name = string(item, p).lower()
        if name != "_" and not _SERVER_NAME_RE.fullmatch(name):
            what = f"bad server name {name!r}: expected a host name or *.domain"
            raise Invalid(item, p, what)
        if name != "_":  # "_" only says "default server", as in nginx
            names.setdefault(name, (item, p))
    return names


def _networks(node: Node, path: str, scope: Scope) -> tuple[IPNetwork, ...]:
    return tuple(read_each(items(node, path, single_ok=True), _network, scope))


def _network(node: Node, path: str) -> IPNetwork:
    text = string(node, path)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Invalid(node, path, f"expected an IP address or CIDR network, got {text!r}") from None


# A virtual server: `servers: - {...}`.
SERVER = Block(
    Key("listen", _listen, required=True),
    Key("server_name", _server_names),
    Key("trusted_proxies", _networks),
    HTTP,  # any http key, overriding the `http:` block for this server
    Key("locations", _locations, required=True),
    Key("access", read_access),
    Key("limit_req", zone_reader("rate", "a request-rate zone")),
    Key("limit_conn", zone_reader("connections", "a connection zone")),
    Key("tls", read_tls),
)


def read_servers(node: Node, path: str, scope: Scope) -> tuple[ServerConfig, ...]:
    # (listen address, server name or "" for the default) -> the server that claimed it
    claimed: dict[tuple[Address, str], str] = {}
    # Whether each address expects a PROXY header: every server on it must agree.
    proxied: dict[Address, bool] = {}
    # Whether each address speaks TLS: a server's tls covers all its addresses, so the
    # servers sharing an address must all have tls or none (SNI chooses among them).
    secured: dict[Address, bool] = {}

    def read(n: Node, p: str) -> ServerConfig:
        got = SERVER.read(n, p, scope)
        tls = "tls" in got.values
        for addr, (item, where, proxy_protocol) in got.values["listen"].items():
            if proxied.setdefault(addr, proxy_protocol) != proxy_protocol:
                raise Invalid(item, where, f"proxy_protocol differs from another server on {addr}")
            if secured.setdefault(addr, tls) != tls:
                other = "without" if tls else "with"
                raise Invalid(item, where, f"{addr} is served {other} tls by another server")
        return _server(got, scope, claimed)

    return tuple(read_each(nonempty_items(node, path), read, scope))


def _server(got: Got, scope: Scope, claimed: dict[tuple[Address, str], str]) -> ServerConfig:
    listen_entries: dict[Address, tuple[Node, str, bool]] = got.values["listen"]
    listen = tuple(listen_entries)
    names: dict[str, tuple[Node, str]] = got.values.get("server_name", {})
    # Two servers answering the same name on the same address: nginx warns, we refuse.
    entries = names or {"": (got.node_of("listen"), got.sub("listen"))}  # no name: the default
    for addr in listen:
        for name, (item, p) in entries.items():
            if (other := claimed.setdefault((addr, name), got.path)) != got.path:
                what = f"{name!r} on {addr}" if name else f"a second default server on {addr}"
                raise Invalid(item, p, f"{what} is already served by {other}")
    inherited = scope.get("http")
    http = inherited if isinstance(inherited, HttpSettings) else HttpSettings()
    overrides = {key: got.values[key] for key in HTTP.supported if key in got.values}
    return ServerConfig(
        listen=listen,
        locations=got.values["locations"],
        http=dataclasses.replace(http, **overrides) if overrides else http,
        server_name=tuple(names),
        trusted_proxies=got.values.get("trusted_proxies", ()),
        access=got.values.get("access", ()),
        limit_req=got.values.get("limit_req"),
        limit_conn=got.values.get("limit_conn"),
        proxy_protocol=tuple(a for a, (_, _, pp) in listen_entries.items() if pp),
        where=got.path,
        tls=got.values.get("tls"),
    )

"""The `http:` defaults and the `servers:` list: virtual servers (their locations are read
by edgeproxy.config.locations)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from yaml.nodes import MappingNode, Node, ScalarNode

from edgeproxy.config.limits import read_access, zone_reader
from edgeproxy.config.locations import read_locations
from edgeproxy.config.model import Address, HttpSettings, IPNetwork, ServerConfig
from edgeproxy.config.nodes import Invalid, address, items, nonempty_items, string
from edgeproxy.config.schema import Block, Duration, Flag, Got, Integer, Key, Scope, Size, read_each
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

# A host name, optionally with a leading `*.` wildcard label (nginx's "*.example.com").
_SERVER_NAME_RE = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


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
    Key("locations", read_locations, required=True),
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

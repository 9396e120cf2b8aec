"""The `servers:` list: virtual servers, their http overrides and their locations."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Collection
from typing import Any, Literal

from yaml.nodes import Node

from edgeproxy.config.model import (
    Address,
    HandlerSpec,
    HttpSettings,
    IPNetwork,
    Location,
    ProxyPass,
    ReturnAction,
    ServerConfig,
)
from edgeproxy.config.nodes import (
    LATER,
    LATER_ZONES,
    Fields,
    Invalid,
    address,
    boolean,
    duration,
    integer,
    items,
    nonempty_items,
    size,
    string,
)

_LATER_STATIC = f"{LATER} (static files come in a later release)"

# Each http key with its reader; a server may override any of them.
HTTP_KEYS: dict[str, Callable[[Node, str], Any]] = {
    "client_max_body_size": size,
    "client_body_buffer_size": size,
    "client_header_buffer_size": size,
    "client_header_timeout": duration,
    "client_body_timeout": duration,
    "send_timeout": duration,
    "keepalive_timeout": lambda n, p: duration(n, p, zero_ok=True),  # 0 = no keep-alive
    "keepalive_requests": lambda n, p: integer(n, p, minimum=1),
    "proxy_buffering": boolean,
    "proxy_max_temp_file_size": lambda n, p: size(n, p, zero_ok=True),  # 0 = never spool
    "proxy_buffers_size": size,
}

_SERVER_KEYS = ("listen", "server_name", "trusted_proxies", "locations", *HTTP_KEYS)
_MATCH_KINDS: dict[str, Literal["prefix", "exact", "regex"]] = {
    "path": "prefix",
    "exact": "exact",
    "regex": "regex",
}
_HANDLER_KEYS = ("proxy_pass", "return")
_LOCATION_UNSUPPORTED = {
    "root": _LATER_STATIC,
    "alias": _LATER_STATIC,
    "expires": _LATER_STATIC,
    "limit_req": LATER_ZONES,
    "access": f"{LATER} (access rules come in a later release)",
}

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A host name, optionally with a leading `*.` wildcard label (nginx's "*.example.com").
_SERVER_NAME_RE = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def http_settings(f: Fields, base: HttpSettings) -> HttpSettings:
    """`base` with the http keys present in `f` replaced (f may hold other keys too)."""
    overrides = {
        key: read(node, f.sub(key))
        for key, node in f.values.items()
        if (read := HTTP_KEYS.get(key)) is not None
    }
    return dataclasses.replace(base, **overrides) if overrides else base


def servers(node: Node, http: HttpSettings, upstreams: Collection[str]) -> tuple[ServerConfig, ...]:
    # (listen address, server name or "" for the default) -> the server that claimed it
    claimed: dict[tuple[Address, str], str] = {}
    return tuple(
        _server(n, p, http, upstreams, claimed) for n, p in nonempty_items(node, "servers")
    )


def _server(
    node: Node,
    path: str,
    http: HttpSettings,
    upstreams: Collection[str],
    claimed: dict[tuple[Address, str], str],
) -> ServerConfig:
    f = Fields(
        node,
        path,
        _SERVER_KEYS,
        {"tls": f"{LATER} (TLS comes in a later release)", "limit_conn": LATER_ZONES},
    )
    listen = _listen(f.required("listen"), f.sub("listen"))
    names: dict[str, tuple[Node, str]] = {}  # name -> its node and path, for errors
    if (n := f.get("server_name")) is not None:
        for item, p in items(n, f.sub("server_name"), single_ok=True):
            name = _server_name(item, p)
            if name != "_":  # "_" only says "default server", as in nginx
                names.setdefault(name, (item, p))
    # Two servers answering the same name on the same address: nginx warns, we refuse.
    entries = names or {"": (f.values["listen"], f.sub("listen"))}  # no name: the default
    for addr in listen:
        for name, (item, p) in entries.items():
            if (other := claimed.setdefault((addr, name), path)) != path:
                what = f"{name!r} on {addr}" if name else f"a second default server on {addr}"
                raise Invalid(item, p, f"{what} is already served by {other}")
    trusted: list[IPNetwork] = []
    if (n := f.get("trusted_proxies")) is not None:
        trusted = [
            _network(item, p) for item, p in items(n, f.sub("trusted_proxies"), single_ok=True)
        ]
    server_http = http_settings(f, http)
    locations = tuple(
        _location(n, p, upstreams)
        for n, p in nonempty_items(f.required("locations"), f.sub("locations"))
    )
    return ServerConfig(
        listen=listen,
        locations=locations,
        http=server_http,
        server_name=tuple(names),
        trusted_proxies=tuple(trusted),
        where=path,
    )


def _listen(node: Node, path: str) -> tuple[Address, ...]:
    listen: list[Address] = []
    for item, p in nonempty_items(node, path, single_ok=True):
        addr = address(item, p, listen=True)
        if addr in listen:  # would fail later, at bind, with a less helpful message
            raise Invalid(item, p, f"{addr} is listed twice")
        listen.append(addr)
    return tuple(listen)


def _server_name(node: Node, path: str) -> str:
    name = string(node, path).lower()
    if name != "_" and not _SERVER_NAME_RE.fullmatch(name):
        raise Invalid(node, path, f"bad server name {name!r}: expected a host name or *.domain")
    return name


def _network(node: Node, path: str) -> IPNetwork:
    text = string(node, path)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Invalid(node, path, f"expected an IP address or CIDR network, got {text!r}") from None


def _location(node: Node, path: str, upstreams: Collection[str]) -> Location:
    f = Fields(node, path, (*_MATCH_KINDS, *_HANDLER_KEYS), _LOCATION_UNSUPPORTED)
    matches = [key for key in f.values if key in _MATCH_KINDS]
    handlers = [key for key in f.values if key in _HANDLER_KEYS]
    if not matches:
        raise Invalid(node, path, "needs one of path (prefix), exact, regex")
    if len(matches) > 1:
        raise f.key_error(matches[1], f"only one of path, exact, regex; {matches[0]} is given")
    if not handlers:
        raise Invalid(node, path, "needs a handler: proxy_pass or return")
    if len(handlers) > 1:
        raise f.key_error(handlers[1], f"only one handler; {handlers[0]} is given")
    match_key = matches[0]
    pattern = string(f.values[match_key], f.sub(match_key))
    regex = None
    if match_key == "regex":
        try:
            regex = re.compile(pattern)
        except re.error as e:
            what = f"bad regex {pattern!r}: {e}"
            raise Invalid(f.values[match_key], f.sub(match_key), what) from None
    elif not pattern.startswith("/"):
        raise Invalid(f.values[match_key], f.sub(match_key), f"must start with /, got {pattern!r}")
    handler: HandlerSpec
    if (n := f.get("proxy_pass")) is not None:
        upstream = string(n, f.sub("proxy_pass"))
        if upstream not in upstreams:
            raise Invalid(n, f.sub("proxy_pass"), f"no upstream named {upstream!r}")
        handler = ProxyPass(upstream)
    else:
        handler = _return(f.values["return"], f.sub("return"))
    return Location(
        match=_MATCH_KINDS[match_key],
        pattern=pattern,
        where=path,
        handler=handler,
        regex=regex,
    )


def _return(node: Node, path: str) -> ReturnAction:
    f = Fields(node, path, ("status", "body", "location"))
    status = integer(f.required("status"), f.sub("status"), minimum=200, maximum=599)
    body = string(n, f.sub("body")).encode() if (n := f.get("body")) is not None else b""
    location = string(n, f.sub("location")) if (n := f.get("location")) is not None else None
    if location is None and status in _REDIRECTS:
        raise Invalid(node, f.sub("location"), f"required with status {status}")
    return ReturnAction(status=status, body=body, location=location)

"""The `locations:` of a server: one match (prefix, exact, regex) and one handler each
(proxy_pass, return, or static files with their options)."""

from __future__ import annotations

import re
from typing import Literal

from yaml.nodes import Node, ScalarNode

from edgeproxy.config.limits import read_access, zone_reader
from edgeproxy.config.model import HandlerSpec, Location, ProxyPass, ReturnAction, StaticFiles
from edgeproxy.config.nodes import Invalid, duration, items, nonempty_items, string
from edgeproxy.config.schema import (
    Block,
    Choice,
    Flag,
    Got,
    Integer,
    Key,
    OneOf,
    Scope,
    names_in,
    read_each,
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
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


def read_locations(node: Node, path: str, scope: Scope) -> tuple[Location, ...]:
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

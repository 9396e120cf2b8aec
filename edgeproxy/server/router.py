"""Routing: listen address + Host -> virtual server; normalised path -> route.

Tables are built once per config. Precedence, as nginx: an `exact` location wins, then
`regex` locations in file order, then the longest `path` prefix. Each location's Route
(handler and phases) is built once, by the `make_route` the worker passes in; a path no
location matches gets the server's 404 route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import unquote_to_bytes

from edgeproxy.config.model import Location, ServerConfig
from edgeproxy.server.request import ConnectionPhase, Route

# Recent answers kept per table. Clients repeat their Host and mostly a few paths; a
# table that fills up is emptied, and long keys are never kept, so memory stays bounded
# (at most CACHE_SIZE x CACHED_KEY_MAX bytes of keys) whatever the traffic.
CACHE_SIZE: Final = 1024
CACHED_KEY_MAX: Final = 256
Answer = TypeVar("Answer")
MakeRoute = Callable[[ServerConfig, "Location | None"], Route]


def normalize_path(target: bytes) -> str | None:
    """The path of a request target, percent-decoded with dot segments resolved.

    None when it is not a path we will route (NUL, or `..` climbing above the root). The
    original target is what gets forwarded; this form is only for matching, so that
    `/static/%2e%2e/app` cannot dodge a location.
    """
    path = target.split(b"?", 1)[0]
    if b"%" in path:
        path = unquote_to_bytes(path)
        if b"\x00" in path:
            return None
    text = path.decode("utf-8", "surrogateescape")
    if "/." not in text and "//" not in text:
        return text
    segments: list[str] = []
    for segment in text.split("/")[1:]:
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        elif segment not in (".", ""):
            segments.append(segment)
    trailing = "/" if text.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def _remember(cache: dict[bytes, Answer], key: bytes, answer: Answer) -> None:
    """Keep a routing answer: not for a long key, and a full table starts over."""
    if len(key) <= CACHED_KEY_MAX:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[key] = answer


class ServerRoutes:
    """The locations of one virtual server, in lookup order."""

    __slots__ = ("_cache", "config", "exact", "not_found", "prefixes", "regexes")

    def __init__(self, config: ServerConfig, make_route: MakeRoute) -> None:
        self.config = config
        self.not_found = make_route(config, None)
        self.exact: dict[str, Route] = {}
        self._cache: dict[bytes, tuple[str | None, Route]] = {}
        self.regexes: list[tuple[Location, Route]] = []
        prefixes: list[tuple[str, Route]] = []
        for location in config.locations:
            route = make_route(config, location)
            if location.match == "exact":
                self.exact.setdefault(location.pattern, route)
            elif location.match == "regex":
                self.regexes.append((location, route))
            else:
                prefixes.append((location.pattern, route))
        # Longest first, so the first match is the longest; stable for equal lengths.
        self.prefixes = sorted(prefixes, key=lambda item: -len(item[0]))

    def route(self, target: bytes) -> tuple[str | None, Route]:
        """The normalised path of a request target (None: not routable) and its route."""
        cache = self._cache
        found = cache.get(target)
        if found is not None:
            return found
        path = normalize_path(target) if target[:1] == b"/" else target.decode("latin-1")
        found = (path, self.location_for(path) if path is not None else self.not_found)
        _remember(cache, target, found)
        return found

    def location_for(self, path: str) -> Route:
        route = self.exact.get(path)
        if route is not None:
            return route
        for location, route in self.regexes:
            assert location.regex is not None
            if location.regex.search(path):
                return route
        for prefix, route in self.prefixes:
            if path.startswith(prefix):
                return route
        return self.not_found


class Router:
    """The virtual servers that share one listen address."""

    __slots__ = ("_cache", "by_name", "connection_phases", "default", "routes", "wildcards")

    def __init__(
        self,
        servers: list[ServerConfig],
        make_route: MakeRoute,
        connection_phases: tuple[ConnectionPhase, ...] = (),
        routes: list[ServerRoutes] | None = None,  # already built (a TLS connection's view)
        default: ServerRoutes | None = None,  # instead of nginx's choice below
    ) -> None:
        if routes is None:
            routes = [ServerRoutes(server, make_route) for server in servers]
        self.routes = routes
        self.connection_phases = connection_phases  # run on every connection accepted
        self.by_name: dict[bytes, ServerRoutes] = {}
        self.wildcards: list[tuple[bytes, ServerRoutes]] = []
        self._cache: dict[bytes, ServerRoutes] = {}
        # nginx: the default server is the one without names ("_"), else the first listed.
        self.default = default or next((r for r in routes if not r.config.server_name), routes[0])
        for route in routes:
            for name in route.config.server_name:
                encoded = name.encode()
                if encoded.startswith(b"*."):
                    self.wildcards.append((encoded[1:], route))  # ".example.com"
                else:
                    self.by_name.setdefault(encoded, route)
        # The longest suffix wins, as nginx's longest wildcard match.
        self.wildcards.sort(key=lambda item: -len(item[0]))

    def server_for(self, host: bytes) -> ServerRoutes:
        if not host:
            return self.default
        cache = self._cache
        found = cache.get(host)
        if found is None:
            found = self._lookup(host)
            _remember(cache, host, found)
        return found

    def _lookup(self, host: bytes) -> ServerRoutes:
        if b":" in host and host[-1:] != b"]":  # strip a port, but not from a bare [v6]
            host = host.rsplit(b":", 1)[0]
        name = host.lower().rstrip(b".")
        route = self.by_name.get(name)
        if route is not None:
            return route
        for suffix, route in self.wildcards:
            if name.endswith(suffix):
                return route
        return self.default

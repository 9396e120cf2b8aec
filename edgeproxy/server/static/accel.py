"""X-Accel-Redirect: an upstream answers with a header naming a file, edgeproxy sends it.

The app decides who may download; edgeproxy sends the bytes. The URI in the header is
matched against the same server's locations, by the router's own rules; only a location
marked `internal: true` (a static one: the config allows `internal` only with root or
alias) serves it, anything else is 404, as nginx answers an internal redirect to nowhere.
The request keeps its fields (Range, If-None-Match apply to the file) and becomes a GET,
HEAD staying HEAD (nginx).
"""

from __future__ import annotations

from edgeproxy.config.model import Location, ServerConfig, StaticFiles
from edgeproxy.http.events import RequestHead
from edgeproxy.server.request import Client, Request, Responder, Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler
from edgeproxy.server.router import ServerRoutes, normalize_path
from edgeproxy.server.static.handler import StaticHandler

HEADER = b"x-accel-redirect"
_NOT_FOUND = AnswerHandler(Answer(404))


def redirect_target(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The X-Accel-Redirect URI of an upstream response, if it has one."""
    for name, value in headers:
        if name == HEADER:
            return value.strip()
    return None


class InternalRedirects:
    """The internal locations of each server, built on the first redirect of that server
    (a proxy location's handler serves one server, so this is usually one table)."""

    __slots__ = ("tables",)

    def __init__(self) -> None:
        self.tables: dict[int, tuple[ServerConfig, ServerRoutes]] = {}

    def _routes(self, server: ServerConfig) -> ServerRoutes:
        found = self.tables.get(id(server))
        if found is None or found[0] is not server:
            found = (server, ServerRoutes(server, _internal_route))
            self.tables[id(server)] = found
        return found[1]

    def start(self, request: Request, uri: bytes, client: Client) -> Responder | None:
        """Answer `request` with what `uri` names in an internal location."""
        head = request.head
        routes = self._routes(request.route.server)
        path = normalize_path(uri) if uri[:1] == b"/" else None
        route = routes.location_for(path) if path is not None else routes.not_found
        method = b"HEAD" if head.method == b"HEAD" else b"GET"
        redirected = RequestHead(method, uri, head.version, head.headers, head.spelled)
        redirected.host = head.host
        redirected.keep_alive = head.keep_alive
        inner = Request(redirected, route, request.body, request.peer_ip, request.started)
        return route.handler.start(inner, client)


def _internal_route(server: ServerConfig, location: Location | None) -> Route:
    spec = location.handler if location is not None else None
    if isinstance(spec, StaticFiles) and spec.internal:
        handler: StaticHandler | AnswerHandler = StaticHandler(spec)
    else:
        handler = _NOT_FOUND
    return Route(server, location, handler, (), b"")

"""From config to routes: which handler and which phases each location gets.

Three tables, each a row per feature, so that a new feature is a row here plus its own
module, never a branch in the connection:

- HANDLERS: a location's handler spec type (edgeproxy.config.model.HandlerSpec) -> a
  factory of its Handler;
- REQUEST_PHASES: phase factories in the order the phases run; a factory returns None
  where its keys are not configured, so that phase is not in the route at all;
- CONNECTION_PHASES: the same for the checks run when a connection is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgeproxy.config.model import (
    Location,
    ProxyPass,
    ReturnAction,
    ServerConfig,
    StaticFiles,
)
from edgeproxy.limits.counters import ConnectionCounter, RateCounter
from edgeproxy.limits.shared import shared_connections, shared_rate
from edgeproxy.limits.zones import store
from edgeproxy.server.limit_phases import AccessPhase, ConnectionLimitPhase, RateLimitPhase
from edgeproxy.server.phases import ClientAddressPhase
from edgeproxy.server.proxy import ProxyHandler
from edgeproxy.server.request import ConnectionPhase, Handler, RequestPhase, Route
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import (
    AnswerHandler,
    TemplateHandler,
    has_variables,
    return_answer,
)
from edgeproxy.server.services import WorkerServices
from edgeproxy.server.static.handler import StaticHandler

HandlerFactory = Callable[[Any, WorkerServices], Handler]
RequestPhaseFactory = Callable[[ServerConfig, "Location | None"], "RequestPhase | None"]
ConnectionPhaseFactory = Callable[[Sequence[ServerConfig]], "ConnectionPhase | None"]


def _proxy_pass(spec: ProxyPass, services: WorkerServices) -> Handler:
    return ProxyHandler(services.pools[spec.upstream], services.config.temp_path)


def _return(spec: ReturnAction, services: WorkerServices) -> Handler:
    if has_variables(spec):
        return TemplateHandler(spec)
    return AnswerHandler(return_answer(spec))


def _static(spec: StaticFiles, services: WorkerServices) -> Handler:
    if spec.internal:  # served only through X-Accel-Redirect (edgeproxy.server.static.accel)
        return _NOT_FOUND
    last = spec.try_files[-1] if spec.try_files else ""
    if last.startswith("@"):  # try_files' fallback: the upstream named after the `@`
        fallback = ProxyHandler(services.pools[last[1:]], services.config.temp_path)
        return StaticHandler(spec, fallback)
    return StaticHandler(spec)


HANDLERS: dict[type[Any], HandlerFactory] = {
    ProxyPass: _proxy_pass,
    ReturnAction: _return,
    StaticFiles: _static,
}


def _client_address(server: ServerConfig, location: Location | None) -> RequestPhase | None:
    return ClientAddressPhase(server.trusted_proxies) if server.trusted_proxies else None


def _access(server: ServerConfig, location: Location | None) -> RequestPhase | None:
    rules = location.access if location is not None and location.access is not None else None
    if rules is None:
        rules = server.access
    return AccessPhase(rules) if rules else None


def _limit_req(server: ServerConfig, location: Location | None) -> RequestPhase | None:
    zone = location.limit_req if location is not None and location.limit_req else server.limit_req
    if zone is None:
        return None
    counter: RateCounter = store().rate(zone)
    if zone.shared is not None:  # counted across instances; the instance's own zone for on_error
        counter = shared_rate(zone, counter)
    return RateLimitPhase(counter)


def _limit_conn(servers: Sequence[ServerConfig]) -> ConnectionPhase | None:
    # Checked at accept, before a Host names a server: the first zone the address's servers name.
    zone = next((server.limit_conn for server in servers if server.limit_conn), None)
    if zone is None:
        return None
    counter: ConnectionCounter = store().connections(zone)
    if zone.shared is not None:
        counter = shared_connections(zone, counter)
    return ConnectionLimitPhase(counter)


# In the order they run: who the client is first, then what it may do.
REQUEST_PHASES: list[RequestPhaseFactory] = [_client_address, _access, _limit_req]
CONNECTION_PHASES: list[ConnectionPhaseFactory] = [_limit_conn]

_NOT_FOUND = AnswerHandler(Answer(404))


def default_host(server: ServerConfig) -> bytes:
    """Host sent upstream for an HTTP/1.0 request without one: the server's first name."""
    names = [n for n in server.server_name if "*" not in n]
    return (names[0] if names else "localhost").encode()


class RouteBuilder:
    """Builds each location's Route once per worker and config."""

    def __init__(self, services: WorkerServices) -> None:
        self.services = services

    def _count_limits(self, phases: Sequence[RequestPhase | ConnectionPhase]) -> None:
        """Give the limit phases their zone's counters, where the worker counts metrics."""
        metrics = self.services.metrics
        if metrics is None:
            return
        for phase in phases:
            if isinstance(phase, (RateLimitPhase, ConnectionLimitPhase)):
                phase.stats = metrics.zone(phase.zone.config.name)

    def __call__(self, server: ServerConfig, location: Location | None) -> Route:
        handler: Handler
        if location is None:
            handler = _NOT_FOUND
        else:
            spec = location.handler
            factory = HANDLERS.get(type(spec))
            if factory is None:
                raise TypeError(f"{location.where}: no handler for {type(spec).__name__}")
            handler = factory(spec, self.services)
        phases = [make(server, location) for make in REQUEST_PHASES]
        route = Route(
            server,
            location,
            handler,
            tuple(phase for phase in phases if phase is not None),
            default_host(server),
        )
        self._count_limits(route.phases)
        if self.services.metrics is not None:
            route.metrics = self.services.metrics.route(server, location)
        return route

    def connection_phases(self, servers: Sequence[ServerConfig]) -> tuple[ConnectionPhase, ...]:
        """The accept-time checks of one listen address, shared by its servers."""
        made = [make(servers) for make in CONNECTION_PHASES]
        phases = tuple(phase for phase in made if phase is not None)
        self._count_limits(phases)
        return phases

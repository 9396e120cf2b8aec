"""`metrics: {listen, path}`: where the Prometheus scrape is served.

The scrape gets an address of its own, never a public server's: what the proxy counts
(its upstreams, its zones) is for its operators, not for whoever reaches the site.
"""

from __future__ import annotations

from yaml.nodes import Node

from edgeproxy.config.model import Address, MetricsConfig, ServerConfig
from edgeproxy.config.nodes import Invalid, address, string
from edgeproxy.config.schema import Block, Key, Scope, Section

_WILDCARDS = ("0.0.0.0", "::")


def _overlaps(a: Address, b: Address) -> bool:
    """Whether binding both would take the same TCP port on some interface."""
    if a.port != b.port or b.kind != "tcp":
        return False
    return a.host == b.host or a.host in _WILDCARDS or b.host in _WILDCARDS


def _listen(node: Node, path: str, scope: Scope) -> Address:
    found = address(node, path, listen=True)
    if found.kind != "tcp":
        raise Invalid(node, path, f"must be host:port (a TCP address), got {found}")
    servers: tuple[ServerConfig, ...] = scope.get("servers", ())
    for server in servers:
        for public in server.listen:
            if _overlaps(found, public):
                raise Invalid(
                    node, path, f"{found} is taken by {server.where}'s listen {public}: the "
                    "metrics need an address of their own, not a public server's"
                )  # fmt: skip
    return found


def _path(node: Node, path: str, scope: Scope) -> str:
    value = string(node, path)
    if not value.startswith("/") or any(c in value for c in " ?#"):
        raise Invalid(node, path, f"must be a path like /metrics, got {value!r}")
    return value


METRICS = Block(
    Key("listen", _listen, required=True),
    Key("path", _path),
)

read_metrics = Section(METRICS, MetricsConfig)

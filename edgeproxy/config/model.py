"""The validated configuration: frozen, typed objects built once at startup.

Everything the request path needs is already parsed here (sizes in bytes, durations in
seconds, addresses split, regexes compiled), so nothing is re-derived per request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    """A listen or peer address: `host:port`, `[v6]:port` or `unix:/path`."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The `http:` block; every server starts from it and may override any key."""

    client_max_body_size: int = 10 * 1024 * 1024  # nginx: 1m; the contract's example: 10m
    client_body_buffer_size: int = 64 * 1024  # nginx: 8k|16k; bodies above spool to disk
    client_header_buffer_size: int = 16 * 1024  # nginx large_client_header_buffers: 4 x 8k
    client_header_timeout: float = 10.0  # nginx: 60s; 10s starves slowloris sooner
    client_body_timeout: float = 30.0  # nginx: 60s
    # Bytes per second a body must average once client_body_timeout has passed, or 408: a
    # body trickled in a byte at a time otherwise holds its connection (and spool file) for
    # as long as the client likes. Apache mod_reqtimeout: MinRate=500. 0 = no minimum.
    client_body_min_rate: int = 500
    send_timeout: float = 30.0  # nginx: 60s
    keepalive_timeout: float = 75.0  # nginx: 75s
    keepalive_requests: int = 1000  # nginx: 1000
    proxy_buffering: bool = True  # nginx: on
    proxy_max_temp_file_size: int = 1024 * 1024 * 1024  # nginx: 1024m
    # Added key: response bytes held in memory per request before spilling to a temp file
    # (nginx splits this into proxy_buffers/proxy_buffer_size; one number is easier to
    # reason about).
    proxy_buffers_size: int = 64 * 1024
    # Static files: extension -> Content-Type on top of the built-in table, and the charset
    # added to text types (nginx: charset off).
    types: tuple[tuple[str, str], ...] = ()
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One backend address of an upstream pool."""

    address: Address
    weight: int = 1
    max_fails: int = 1  # nginx: 1
    fail_timeout: float = 10.0  # nginx: 10s
    max_conns: int = 0  # 0 = unlimited, as nginx
    backup: bool = False
    down: bool = False  # kept in the list (ip_hash keys stay put), never sent a request


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """`queue: {size, timeout}`: requests waiting for a `max_conns` place, per worker."""

    size: int
    timeout: float = 30.0  # nginx (queue directive): 60s; a browser gives up sooner


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """`health_check:` active probes of every server of a pool, once per instance."""

    path: str = "/"  # nginx plus: "/"
    interval: float = 5.0  # nginx plus: 5s (HAProxy inter: 2s)
    timeout: float = 2.0  # below interval, so probes of one server never overlap
    fails: int = 3  # consecutive failures that take a server out (HAProxy fall: 3)
    passes: int = 2  # consecutive successes that bring it back (HAProxy rise: 2)
    # Good statuses as inclusive ranges; default 2xx and 3xx (nginx plus, HAProxy).
    status: tuple[tuple[int, int], ...] = ((200, 399),)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    servers: tuple[PeerConfig, ...]
    balance: str = "round_robin"
    protocol: str = "http"
    keepalive: int = 32
    keepalive_timeout: float = 4.0  # below gunicorn's 5s keepalive, so a reused conn is alive
    connect_timeout: float = 5.0  # nginx proxy_connect_timeout: 60s; 5s fails over sooner
    read_timeout: float = 60.0  # nginx proxy_read_timeout: 60s
    next_upstream: frozenset[str] = frozenset({"error", "timeout"})  # nginx default
    next_upstream_tries: int = 3  # nginx: 0 (unlimited); 3 bounds the worst case
    queue: QueueConfig | None = None  # None: a request finding every server full gets 502
    health_check: HealthCheckConfig | None = None  # None: passive health only


@dataclass(frozen=True, slots=True)
class ReturnAction:
    """`return: {status, body, location}` -- answer directly."""

    status: int
    body: bytes = b""
    location: str | None = None


@dataclass(frozen=True, slots=True)
class ProxyPass:
    """`proxy_pass: NAME` -- forward to the upstream pool NAME."""

    upstream: str


@dataclass(frozen=True, slots=True)
class StaticFiles:
    """`root: DIR` or `alias: DIR` -- serve files from DIR (edgeproxy.server.static)."""

    directory: str  # the root or the alias
    # Leading path segments mapped away: the location prefix for `alias`, none for `root`.
    strip: tuple[str, ...] = ()
    alias_file: bool = False  # an `exact` location's alias names one file, not a directory
    expires: float | None = None  # Cache-Control max-age in seconds; None = off (nginx: off)
    index: tuple[str, ...] = ("index.html",)  # nginx: index.html
    autoindex: bool = False  # nginx: off
    gzip_static: bool = True  # nginx: off; the contract turns it on by default
    disable_symlinks: str = "outside_root"  # nginx: off; the contract's safer default
    try_files: tuple[str, ...] = ()
    # Reachable only through an upstream's X-Accel-Redirect; asked directly, 404 (nginx).
    internal: bool = False


# What a location does with a request: one of these, chosen by the location's handler key.
# The server builds its handler object from this (edgeproxy.server.routes.HANDLERS).
HandlerSpec = ProxyPass | ReturnAction | StaticFiles


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One `access:` rule: `allow NETWORK`, `deny NETWORK`, `allow all`, `deny all`."""

    allow: bool
    network: IPNetwork | None  # None = all (unix-socket clients included)


@dataclass(frozen=True, slots=True)
class SharedStateConfig:
    """`shared_state:` the Redis that zones with `shared: true` count in (Envoy, Kong and
    Traefik share their rate limits the same way)."""

    redis: str  # redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// (TLS), unix:///PATH[?db=N]
    timeout: float = 0.05  # every Redis call; slower counts as down (the contract's 50ms)
    on_error: str = "local"  # Redis down or slow: local (the instance's own zone) | allow | deny
    prefix: str = "edgeproxy"  # namespace of the keys: one per site sharing a Redis
    lease: float = 10.0  # a dead instance's connection slots are freed this long after it dies


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """A named limit of `limits:`, shared by every worker (nginx's limit_req_zone /
    limit_conn_zone); `kind` is "rate" (the `rate` key) or "connections"."""

    name: str
    kind: Literal["rate", "connections"]
    key: str = "client_ip"  # client_ip | client_ip/N[/M] | header:NAME
    rate: float = 0.0  # requests per second
    rate_window: int = 1  # the unit it was written in (1 = r/s, 60 = r/m), for RateLimit-Policy
    burst: int = 0  # nginx: 0
    delay: int = 0  # nginx delay=N: the first N excess requests are not delayed
    nodelay: bool = False  # nginx nodelay: no excess request within the burst is delayed
    connections: int = 0
    status: int = 0  # 0 = the kind's default: 429 for rate (RFC 6585), 503 for connections
    dry_run: bool = False  # log what would be limited; limit nothing
    size: int = 10 * 1024 * 1024  # nginx's usual zone size: 10m
    # `shared: true`: counted across instances in the top-level shared_state's Redis
    shared: SharedStateConfig | None = None

    @property
    def reject_status(self) -> int:
        return self.status or (429 if self.kind == "rate" else 503)


@dataclass(frozen=True, slots=True)
class Location:
    """A routing rule: one match and one handler."""

    match: Literal["exact", "regex", "prefix"]
    pattern: str
    where: str  # the key path in the config, e.g. "servers[0].locations[2]", for logs
    handler: HandlerSpec
    regex: re.Pattern[str] | None = None  # compiled when match == "regex"
    access: tuple[AccessRule, ...] | None = None  # None: the server's rules
    limit_req: ZoneConfig | None = None  # None: the server's


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """`tls: {certificate, key}`: every listen address of the server speaks TLS."""

    certificate: str  # PEM: the leaf certificate, then its intermediates (as nginx's)
    key: str  # PEM private key of the leaf
    # Where `certificate` is written ("servers[0].tls.certificate", its line), for the
    # warning about an expired certificate; not part of what the value is.
    where: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A virtual server."""

    listen: tuple[Address, ...]
    locations: tuple[Location, ...]
    http: HttpSettings
    server_name: tuple[str, ...] = ()  # lowercased; empty (or only "_") = default server
    trusted_proxies: tuple[IPNetwork, ...] = ()
    access: tuple[AccessRule, ...] = ()  # a location's own rules replace these (as nginx)
    limit_req: ZoneConfig | None = None  # a location's own limit_req replaces it
    limit_conn: ZoneConfig | None = None
    proxy_protocol: tuple[
        Address, ...
    ] = ()  # listen addresses whose connections open with a PROXY header
    where: str = ""  # "servers[0]"
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class ErrorLogConfig:
    path: str = "stderr"  # stderr | stdout | a file path
    level: str = "info"  # debug | info | warning | error


@dataclass(frozen=True, slots=True)
class LogTemplate:
    """An access-log `format:` written with nginx's variables, split once at load time."""

    text: str  # as written
    # In order: ("", literal text) or (variable, argument); the argument is the field name
    # of `$http_NAME` (lowercase, `_` read as `-`), "" for the other variables.
    parts: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str = "stdout"  # stdout | stderr | a file path
    format: str | LogTemplate = "combined"  # combined | json | off | a template
    # Buffered lines are written at least this often (and on exit and USR1), so a worker
    # that dies loses at most this much of its log. nginx: access_log ... flush=1s.
    # 0 = write every line at once.
    flush: float = 1.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`metrics: {listen, path}`: the Prometheus scrape, on an address of its own."""

    listen: Address
    path: str = "/metrics"  # Prometheus' default metrics_path


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it was read from
    upstreams: Mapping[str, UpstreamConfig]
    servers: tuple[ServerConfig, ...]
    workers: int = 1  # resolved: `auto` becomes os.cpu_count()
    http_parser: str = "auto"  # auto | httptools | h11, resolved by edgeproxy.http.codec
    pid_file: str | None = None
    error_log: ErrorLogConfig = field(default_factory=ErrorLogConfig)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    temp_path: str = "/tmp"
    # Bound on a graceful worker stop (reload, QUIT): in-flight requests get this long.
    # nginx: unbounded unless worker_shutdown_timeout is set; gunicorn graceful_timeout: 30s.
    worker_shutdown_timeout: float = 30.0
    # A worker whose event loop has not run for this long is killed and replaced.
    # gunicorn --timeout: 30s, but that covers app code; a proxy's loop never blocks that long.
    worker_heartbeat_timeout: float = 10.0
    user: str | None = None  # workers switch to this user after the master has bound ports
    group: str | None = None  # default: the user's primary group
    limits: Mapping[str, ZoneConfig] = field(default_factory=dict)  # zones by name
    # Client connections per worker; past it the worker stops accepting until one ends.
    # nginx: worker_connections 512 (its example config: 1024); the contract's: 10000.
    worker_connections: int = 10000
    shared_state: SharedStateConfig | None = None  # None: zones count per instance only
    metrics: MetricsConfig | None = None  # None: no scrape endpoint, nothing counted

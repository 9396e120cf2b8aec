"""proxy.yaml -> a validated, frozen Config.

The file is composed into YAML nodes rather than loaded into dicts, so that every error
can name its line: `proxy.yaml:14: servers[0].locations[1].proxy_pass: no upstream named 'ap'`.
Everything is checked here, once, at startup; nothing downstream re-validates.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Callable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from edgeproxy.config.model import (
    AccessLogConfig,
    Config,
    ErrorLogConfig,
    HttpSettings,
    PeerConfig,
    UpstreamConfig,
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
    nonempty_items,
    string,
    word,
)
from edgeproxy.config.servers import HTTP_KEYS, http_settings, servers
from edgeproxy.errors import ConfigError

_TOP_KEYS = (
    "workers",
    "http_parser",
    "pid_file",
    "error_log",
    "access_log",
    "temp_path",
    "worker_shutdown_timeout",
    "worker_heartbeat_timeout",
    "user",
    "group",
    "http",
    "upstreams",
    "servers",
)
_UPSTREAM_KEYS = (
    "servers",
    "balance",
    "protocol",
    "keepalive",
    "keepalive_timeout",
    "connect_timeout",
    "read_timeout",
    "next_upstream",
    "next_upstream_tries",
)
_PEER_KEYS = ("address", "weight", "max_fails", "fail_timeout", "max_conns", "backup")
_BALANCERS = ("round_robin", "least_conn", "ip_hash", "random_two")
_NEXT_UPSTREAM = ("error", "timeout", "http_502", "http_503", "http_504", "non_idempotent", "off")
_UPSTREAM_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
MAX_WORKERS = 256  # the master's shared worker table has room for twice this (reloads overlap)


def load_config(path: str) -> Config:
    """Read and validate the config file at `path`; every problem is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read config: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "cannot read config: not UTF-8 text") from None
    return parse_config(text, path)


def parse_config(text: str, source: str) -> Config:
    """Validate config `text`; `source` names it in errors (`source:line: key.path: what`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(where, f"YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, f"YAML error: {e}") from None
    if root is None:
        raise ConfigError(f"{source}:1", "the config is empty; it needs at least `servers`")
    try:
        return _config(root, source)
    except Invalid as e:
        raise ConfigError(f"{source}:{e.line}", e.what) from None


def _config(root: Node, source: str) -> Config:
    top = Fields(root, "", _TOP_KEYS, {"limits": LATER_ZONES})
    kwargs: dict[str, Any] = {}
    if (node := top.get("workers")) is not None:
        kwargs["workers"] = _workers(node)
    if (node := top.get("http_parser")) is not None:
        kwargs["http_parser"] = word(node, "http_parser", ("auto", "httptools", "h11"))
    if (node := top.get("pid_file")) is not None:
        kwargs["pid_file"] = string(node, "pid_file")
    if (node := top.get("error_log")) is not None:
        kwargs["error_log"] = _error_log(node)
    if (node := top.get("access_log")) is not None:
        kwargs["access_log"] = _access_log(node)
    if (node := top.get("temp_path")) is not None:
        temp_path = string(node, "temp_path")
        if not os.path.isdir(temp_path):  # found now rather than at the first large body
            raise Invalid(node, "temp_path", f"no such directory {temp_path!r}")
        kwargs["temp_path"] = temp_path
    if (node := top.get("worker_shutdown_timeout")) is not None:
        kwargs["worker_shutdown_timeout"] = duration(node, "worker_shutdown_timeout", zero_ok=True)
    if (node := top.get("worker_heartbeat_timeout")) is not None:
        kwargs["worker_heartbeat_timeout"] = duration(node, "worker_heartbeat_timeout")
    if (node := top.get("user")) is not None:
        kwargs["user"] = _account(node, "user", pwd.getpwnam)
    if (node := top.get("group")) is not None:
        kwargs["group"] = _account(node, "group", grp.getgrnam)
    http = HttpSettings()
    if (node := top.get("http")) is not None:
        http = http_settings(Fields(node, "http", HTTP_KEYS), http)
    upstreams: dict[str, UpstreamConfig] = {}
    if (node := top.get("upstreams")) is not None:
        upstreams = _upstreams(node)
    virtual_servers = servers(top.required("servers"), http, upstreams)
    return Config(source=source, upstreams=upstreams, servers=virtual_servers, **kwargs)


def _workers(node: Node) -> int:
    if isinstance(node, ScalarNode) and node.value == "auto":
        # one worker per core, as nginx's worker_processes auto
        return min(os.cpu_count() or 1, MAX_WORKERS)
    workers = integer(node, "workers", minimum=1)
    if workers > MAX_WORKERS:
        raise Invalid(node, "workers", f"must be <= {MAX_WORKERS}, got {workers}")
    return workers


def _account(node: Node, path: str, lookup: Callable[[str], object]) -> str:
    """A user or group name that exists here (found now, not when a worker starts)."""
    name = string(node, path)
    try:
        lookup(name)
    except KeyError:
        raise Invalid(node, path, f"no such {path} {name!r}") from None
    return name


def _error_log(node: Node) -> ErrorLogConfig:
    f = Fields(node, "error_log", ("path", "level"))
    kwargs: dict[str, Any] = {}
    if (n := f.get("path")) is not None:
        kwargs["path"] = string(n, f.sub("path"))
    if (n := f.get("level")) is not None:
        kwargs["level"] = word(n, f.sub("level"), ("debug", "info", "warning", "error"))
    return ErrorLogConfig(**kwargs)


def _access_log(node: Node) -> AccessLogConfig:
    f = Fields(node, "access_log", ("path", "format"))
    kwargs: dict[str, Any] = {}
    if (n := f.get("path")) is not None:
        kwargs["path"] = string(n, f.sub("path"))
    if (n := f.get("format")) is not None:
        kwargs["format"] = word(n, f.sub("format"), ("combined", "json", "off"))
    return AccessLogConfig(**kwargs)


def _upstreams(node: Node) -> dict[str, UpstreamConfig]:
    f = Fields(node, "upstreams", None)
    result = {}
    for name, value in f.values.items():
        if not _UPSTREAM_NAME_RE.fullmatch(name):
            raise f.key_error(name, "upstream names may use only letters, digits, '_', '.', '-'")
        result[name] = _upstream(name, value, f.sub(name))
    return result


def _upstream(name: str, node: Node, path: str) -> UpstreamConfig:
    f = Fields(
        node,
        path,
        _UPSTREAM_KEYS,
        {"health_check": f"{LATER} (active health checks come in a later release)"},
    )
    kwargs: dict[str, Any] = {}
    if (n := f.get("balance")) is not None:
        kwargs["balance"] = word(n, f.sub("balance"), _BALANCERS)
    protocol = f.get("protocol")
    if protocol is not None and word(protocol, f.sub("protocol"), ("http", "uwsgi")) == "uwsgi":
        what = f"{LATER} (uwsgi protocol comes in a later release)"
        raise Invalid(protocol, f.sub("protocol"), what)
    if (n := f.get("keepalive")) is not None:
        kwargs["keepalive"] = integer(n, f.sub("keepalive"), minimum=0)
    if (n := f.get("keepalive_timeout")) is not None:
        kwargs["keepalive_timeout"] = duration(n, f.sub("keepalive_timeout"), zero_ok=True)
    for key in ("connect_timeout", "read_timeout"):
        if (n := f.get(key)) is not None:
            kwargs[key] = duration(n, f.sub(key))
    if (n := f.get("next_upstream")) is not None:
        kwargs["next_upstream"] = _next_upstream(n, f.sub("next_upstream"))
    if (n := f.get("next_upstream_tries")) is not None:
        kwargs["next_upstream_tries"] = integer(n, f.sub("next_upstream_tries"), minimum=1)
    servers_node = f.required("servers")
    peers = tuple(_peer(n, p) for n, p in nonempty_items(servers_node, f.sub("servers")))
    if all(peer.backup for peer in peers):
        raise Invalid(servers_node, f.sub("servers"), "every server is a backup; one must not be")
    return UpstreamConfig(name=name, servers=peers, **kwargs)


def _next_upstream(node: Node, path: str) -> frozenset[str]:
    words = [word(n, p, _NEXT_UPSTREAM) for n, p in nonempty_items(node, path, single_ok=True)]
    if "off" in words:
        if len(words) > 1:
            raise Invalid(node, path, "off cannot be combined with other conditions")
        return frozenset()  # off: never retry; stored as "no condition", not as a word
    return frozenset(words)


def _peer(node: Node, path: str) -> PeerConfig:
    if not isinstance(node, MappingNode):  # a plain "host:port" item
        return PeerConfig(address(node, path, listen=False))
    f = Fields(node, path, _PEER_KEYS)
    kwargs: dict[str, Any] = {}
    for key, minimum in (("weight", 1), ("max_fails", 0), ("max_conns", 0)):
        if (n := f.get(key)) is not None:
            kwargs[key] = integer(n, f.sub(key), minimum=minimum)
    if (n := f.get("fail_timeout")) is not None:
        kwargs["fail_timeout"] = duration(n, f.sub("fail_timeout"))
    if (n := f.get("backup")) is not None:
        kwargs["backup"] = boolean(n, f.sub("backup"))
    addr = address(f.required("address"), f.sub("address"), listen=False)
    return PeerConfig(addr, **kwargs)

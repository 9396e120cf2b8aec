"""proxy.yaml -> a validated, frozen Config.

The file is composed into YAML nodes rather than loaded into dicts, so that every error
can name its line: `proxy.yaml:14: servers[0].locations[1].proxy_pass: no upstream named 'ap'`.
Everything is checked here, once, at startup; nothing downstream re-validates. Every error
of the file is reported at once (up to MAX_ERRORS), in the order of their lines.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable

import yaml
from yaml.nodes import Node, ScalarNode

from edgeproxy.config.limits import read_shared_state, read_zones
from edgeproxy.config.log_format import read_format
from edgeproxy.config.metrics import read_metrics
from edgeproxy.config.model import AccessLogConfig, Config, ErrorLogConfig, HttpSettings
from edgeproxy.config.nodes import Invalid, Problems, integer, string
from edgeproxy.config.schema import (
    Block,
    Choice,
    Duration,
    Integer,
    Key,
    Scope,
    Section,
    Text,
    read_top,
)
from edgeproxy.config.servers import HTTP, read_servers
from edgeproxy.config.upstreams import read_upstreams
from edgeproxy.errors import ConfigError

MAX_WORKERS = 256  # the master's shared worker table has room for twice this (reloads overlap)
MAX_ERRORS = 50  # a file with more is not worth reading line by line: say how many more


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
    scope = Scope()
    with scope.problems.collect():
        return _config(root, scope, source)
    # Not returned: the file was read to its end all the same, and every problem is kept.
    raise _config_error(scope.problems, source)


def _config_error(problems: Problems, source: str) -> ConfigError:
    """One ConfigError for every problem found, in the order they are written."""
    found = sorted(problems.found, key=lambda problem: (problem.line, problem.column))
    located = [(f"{source}:{problem.line}", problem.what) for problem in found[:MAX_ERRORS]]
    if len(found) > MAX_ERRORS:
        located.append((source, f"{len(found) - MAX_ERRORS} more errors not shown"))
    (where, what), *more = located
    return ConfigError(where, what, more)


def _workers(node: Node, path: str, scope: Scope) -> int:
    if isinstance(node, ScalarNode) and node.value == "auto":
        # one worker per core, as nginx's worker_processes auto
        return min(os.cpu_count() or 1, MAX_WORKERS)
    workers = integer(node, path, minimum=1)
    if workers > MAX_WORKERS:
        raise Invalid(node, path, f"must be <= {MAX_WORKERS}, got {workers}")
    return workers


def _directory(node: Node, path: str, scope: Scope) -> str:
    directory = string(node, path)
    if not os.path.isdir(directory):  # found now rather than at the first large body
        raise Invalid(node, path, f"no such directory {directory!r}")
    return directory


def _account(kind: str, lookup: Callable[[str], object]) -> Callable[[Node, str, Scope], str]:
    """A user or group name that exists here (found now, not when a worker starts)."""

    def read(node: Node, path: str, scope: Scope) -> str:
        name = string(node, path)
        try:
            lookup(name)
        except KeyError:
            raise Invalid(node, path, f"no such {kind} {name!r}") from None
        return name

    return read


ERROR_LOG = Block(
    Key("path", Text()),  # stderr | stdout | a file
    Key("level", Choice(("debug", "info", "warning", "error"))),
)

ACCESS_LOG = Block(
    Key("path", Text()),  # stdout | stderr | a file
    Key("format", read_format),  # combined | json | off | a template of $variables
    Key("flush", Duration(zero_ok=True)),  # 0 = write every line at once
)

# The file itself. Values are read in this order, so `servers` sees `http` and `upstreams`.
TOP = Block(
    Key("workers", _workers),
    Key("http_parser", Choice(("auto", "httptools", "h11"))),
    Key("pid_file", Text()),
    Key("error_log", Section(ERROR_LOG, ErrorLogConfig)),
    Key("access_log", Section(ACCESS_LOG, AccessLogConfig)),
    Key("temp_path", _directory),
    Key("worker_shutdown_timeout", Duration(zero_ok=True)),
    Key("worker_heartbeat_timeout", Duration()),
    Key("user", _account("user", pwd.getpwnam)),
    Key("group", _account("group", grp.getgrnam)),
    Key("http", Section(HTTP, HttpSettings)),  # not in Config: each server holds its own
    Key("upstreams", read_upstreams),
    Key("shared_state", read_shared_state),  # before `limits`, whose shared zones use it
    Key("limits", read_zones),  # before `servers`, whose limit_req / limit_conn name zones
    Key("servers", read_servers, required=True),
    Key("worker_connections", Integer(minimum=1)),
    Key("metrics", read_metrics),  # after `servers`, whose addresses it may not take
)


def _config(root: Node, scope: Scope, source: str) -> Config:
    values = dict(read_top(TOP, root, scope).values)
    values.pop("http", None)
    return Config(source=source, upstreams=values.pop("upstreams", {}), **values)

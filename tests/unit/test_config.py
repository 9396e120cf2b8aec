"""Config loading: the happy path, and each class of error with its exact line and key path."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeproxy.config import (
    AccessLogConfig,
    Address,
    Config,
    ErrorLogConfig,
    HttpSettings,
    PeerConfig,
    ProxyPass,
    ReturnAction,
    ServerConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)
from edgeproxy.config.loader import ACCESS_LOG, ERROR_LOG, TOP
from edgeproxy.config.locations import RETURN
from edgeproxy.config.model import QueueConfig
from edgeproxy.config.schema import Block, Key, Later, Text
from edgeproxy.config.servers import HTTP, SERVER
from edgeproxy.config.upstreams import PEER
from edgeproxy.config.upstreams import UPSTREAM as UPSTREAM_BLOCK
from edgeproxy.errors import ConfigError

# The config contract lives in the team's shared notes (../shared beside the checkout); a
# copy is kept in tests/contract so that CI, which has no ../shared, tests it too.
SHARED_EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "proxy.example.yaml"
EXAMPLE = Path(__file__).resolve().parents[1] / "contract" / "proxy.example.yaml"

# A valid tail that needs no upstream; error cases put their own lines above it, so the
# line numbers in their expected messages can be counted by eye.
SERVERS = """\
servers:
  - listen: "127.0.0.1:0"
    locations:
      - path: /
        return: {status: 200}
"""
UPSTREAM = """\
upstreams:
  app:
    servers: ["127.0.0.1:8001"]
"""


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "t.yaml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def server(body: str) -> str:
    """UPSTREAM plus one server (line 5) whose mapping continues at line 6 with `body`."""
    return UPSTREAM + 'servers:\n  - listen: "127.0.0.1:0"\n' + body


# A location to end a server whose error case is about another key (so that the file holds
# that one error, not a second about the missing locations).
LOCATIONS = "    locations: [{path: /, return: {status: 200}}]\n"


def location(body: str) -> str:
    """UPSTREAM plus one server whose only location (at line 7) is `body`."""
    lines = textwrap.dedent(body).splitlines()
    indented = "\n".join(["      - " + lines[0], *("        " + line for line in lines[1:])])
    return server("    locations:\n") + indented + "\n"


# --- the happy path ------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse(SERVERS)
    assert config.source == "t.yaml"
    assert config.workers == 1
    assert config.http_parser == "auto"
    assert config.pid_file is None
    assert config.upstreams == {}
    (srv,) = config.servers
    assert srv.listen == (Address("tcp", host="127.0.0.1", port=0),)
    assert srv.http == HttpSettings()
    assert srv.server_name == ()
    assert srv.where == "servers[0]"
    (loc,) = srv.locations
    assert (loc.match, loc.pattern, loc.where) == ("prefix", "/", "servers[0].locations[0]")
    assert loc.handler == ReturnAction(200)


def test_full_config_is_parsed_into_typed_values(tmp_path: Path) -> None:
    config = parse(f"""\
        workers: 3
        http_parser: h11
        pid_file: /run/edgeproxy.pid
        error_log: {{path: /var/log/e.log, level: warning}}
        access_log: {{path: stderr, format: off, flush: 250ms}}
        temp_path: {tmp_path}
        http:
          client_max_body_size: 1m
          client_body_buffer_size: 512
          client_header_buffer_size: 8k
          client_header_timeout: 250ms
          client_body_timeout: 1m30s
          client_body_min_rate: 1k
          send_timeout: 2
          keepalive_timeout: 0
          keepalive_requests: 10
          proxy_buffering: false
          proxy_max_temp_file_size: 0
          proxy_buffers_size: 128k
        upstreams:
          app.v2:
            balance: ip_hash
            protocol: http
            keepalive: 0
            keepalive_timeout: 0
            connect_timeout: 1.5
            read_timeout: 2m
            next_upstream: [error, http_502, non_idempotent]
            next_upstream_tries: 1
            servers:
              - "unix:/run/app.sock"
              - {{address: "[::1]:8001", weight: 5, max_fails: 0, fail_timeout: 3s}}
              - {{address: "localhost:8002", max_conns: 4, backup: true}}
          other:
            next_upstream: off
            servers: ["10.0.0.1:80"]
        servers:
          - listen: ["*:8080", "[::]:8080", {{address: "unix:/run/edge.sock"}}]
            server_name: [Example.COM, "*.example.com", _]
            trusted_proxies: [10.0.0.0/8, 192.168.1.7, "2001:db8::/32", 10.1.2.3/8]
            client_max_body_size: 1g
            keepalive_requests: 5
            locations:
              - exact: /healthz
                return: {{status: 200, body: "ok ✓\\n"}}
              - regex: "\\\\.(php|asp)$"
                return: {{status: 404}}
              - path: /old/
                return: {{status: 301, location: "https://example.com/new/"}}
              - path: /
                proxy_pass: app.v2
          - listen: ":8080"
            server_name: _
            locations:
              - path: /
                proxy_pass: other
        """)
    assert config.workers == 3
    assert config.http_parser == "h11"
    assert config.pid_file == "/run/edgeproxy.pid"
    assert (config.error_log.path, config.error_log.level) == ("/var/log/e.log", "warning")
    assert (config.access_log.path, config.access_log.format) == ("stderr", "off")
    assert config.access_log.flush == 0.25
    assert config.temp_path == str(tmp_path)

    http = HttpSettings(
        client_max_body_size=1024 * 1024,
        client_body_buffer_size=512,
        client_header_buffer_size=8 * 1024,
        client_header_timeout=0.25,
        client_body_timeout=90.0,
        client_body_min_rate=1024,
        send_timeout=2.0,
        keepalive_timeout=0.0,
        keepalive_requests=10,
        proxy_buffering=False,
        proxy_max_temp_file_size=0,
        proxy_buffers_size=128 * 1024,
    )
    app = config.upstreams["app.v2"]
    assert (app.name, app.balance, app.protocol, app.keepalive) == ("app.v2", "ip_hash", "http", 0)
    assert (app.keepalive_timeout, app.connect_timeout, app.read_timeout) == (0.0, 1.5, 120.0)
    assert app.next_upstream == frozenset({"error", "http_502", "non_idempotent"})
    assert app.next_upstream_tries == 1
    assert app.servers == (
        PeerConfig(Address("unix", path="/run/app.sock")),
        PeerConfig(Address("tcp", "::1", 8001), weight=5, max_fails=0, fail_timeout=3.0),
        PeerConfig(Address("tcp", "localhost", 8002), max_conns=4, backup=True),
    )
    assert config.upstreams["other"].next_upstream == frozenset()  # off: never retry

    first, second = config.servers
    assert first.listen == (
        Address("tcp", "0.0.0.0", 8080),
        Address("tcp", "::", 8080),
        Address("unix", path="/run/edge.sock"),
    )
    assert first.server_name == ("example.com", "*.example.com")
    assert first.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.0.0.0/8"),  # strict=False: host bits are dropped
    )
    # The server's own keys override the http block; the rest is inherited.
    assert first.http == dataclasses.replace(
        http, client_max_body_size=1024**3, keepalive_requests=5
    )
    assert second.http == http
    assert second.server_name == ()  # "_" only marks the default server

    exact, regex, redirect, prefix = first.locations
    assert (exact.match, exact.pattern) == ("exact", "/healthz")
    assert exact.handler == ReturnAction(200, "ok ✓\n".encode())
    assert (regex.match, regex.pattern) == ("regex", r"\.(php|asp)$")
    assert regex.regex is not None and regex.regex.search("/index.php")
    assert redirect.handler == ReturnAction(301, location="https://example.com/new/")
    assert (prefix.match, prefix.handler) == ("prefix", ProxyPass("app.v2"))
    assert prefix.where == "servers[0].locations[3]"


def test_zero_writes_each_log_line_at_once_and_turns_the_body_rate_check_off() -> None:
    config = parse("access_log: {flush: 0}\nhttp: {client_body_min_rate: 0}\n" + SERVERS)
    assert config.access_log.flush == 0.0
    assert config.servers[0].http.client_body_min_rate == 0


def test_new_keys_have_their_documented_defaults() -> None:
    config = parse(SERVERS)
    assert config.access_log.flush == 1.0  # nginx: flush=1s
    assert config.servers[0].http.client_body_min_rate == 500  # Apache: MinRate=500


def test_workers_auto_is_resolved_to_the_cpu_count() -> None:
    assert parse("workers: auto\n" + SERVERS).workers == (os.cpu_count() or 1)


def test_config_objects_are_frozen() -> None:
    config = parse(SERVERS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.servers[0].http.keepalive_requests = 2  # type: ignore[misc]


def test_http_key_table_covers_every_http_setting() -> None:
    assert set(HTTP.supported) == {f.name for f in dataclasses.fields(HttpSettings)}


def _fields(model: type) -> set[str]:
    return {f.name for f in dataclasses.fields(model)}


# Each block's supported keys are the fields of the model it fills: a field added without a
# declaration (or a declaration without a field) is caught here. The rest is what the
# loader fills in itself (`source`, `name`, `where`) or resolves (`http`; a server's
# `proxy_protocol` addresses, from its `listen` entries).
@pytest.mark.parametrize(
    ("block", "model", "declared_only", "model_only"),
    [
        (TOP, Config, {"http"}, {"source"}),
        (ERROR_LOG, ErrorLogConfig, set(), set()),
        (ACCESS_LOG, AccessLogConfig, set(), set()),
        (UPSTREAM_BLOCK, UpstreamConfig, set(), {"name"}),
        (PEER, PeerConfig, set(), set()),
        (SERVER, ServerConfig, set(HTTP.supported), {"http", "where", "proxy_protocol"}),
        (RETURN, ReturnAction, set(), set()),
    ],
)
def test_every_block_declares_exactly_its_model_fields(
    block: Block, model: type, declared_only: set[str], model_only: set[str]
) -> None:
    assert set(block.supported) - declared_only == _fields(model) - model_only


def test_a_key_declared_twice_is_a_mistake_found_at_import() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Block(Key("path", Text()), Later("path", "static files come"))


def test_same_listen_address_may_host_several_named_servers() -> None:
    config = parse(
        UPSTREAM
        + """\
servers:
  - listen: "0.0.0.0:8080"
    server_name: a.example
    locations: [{path: /, proxy_pass: app}]
  - listen: "*:8080"
    server_name: [b.example]
    locations: [{path: /, proxy_pass: app}]
  - listen: ":8080"
    locations: [{path: /, proxy_pass: app}]
"""
    )
    assert [s.server_name for s in config.servers] == [("a.example",), ("b.example",), ()]


# --- errors: one case per class, with its exact line and key path ---------------------


ERRORS = [
    # unknown keys, everywhere
    ("workerz: 2\n" + SERVERS, "t.yaml:1: workerz: unknown key; did you mean 'workers'?"),
    (
        "http:\n  keepalive: 3\n" + SERVERS,
        "t.yaml:2: http.keepalive: unknown key; did you mean 'keepalive_timeout'?",
    ),
    (
        "error_log: {path: x, lvl: info}\n" + SERVERS,
        "t.yaml:1: error_log.lvl: unknown key; did you mean 'level'?",
    ),
    (
        server("    lisen: x\n" + LOCATIONS),
        "t.yaml:6: servers[0].lisen: unknown key; did you mean 'listen'?",
    ),
    (
        location("path: /\nreturn: {status: 200, bdy: x}"),
        "t.yaml:8: servers[0].locations[0].return.bdy: unknown key; did you mean 'body'?",
    ),
    (
        "upstreams:\n  app:\n    servers: [{address: 'a:1', wieght: 2}]\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0].wieght: unknown key; did you mean 'weight'?",
    ),
    # duplicate keys
    ("workers: 1\nworkers: 2\n" + SERVERS, "t.yaml:2: workers: duplicate key"),
    (
        "http:\n  send_timeout: 1s\n  send_timeout: 2s\n" + SERVERS,
        "t.yaml:3: http.send_timeout: duplicate key",
    ),
    # wrong types
    (
        "http:\n  keepalive_requests: abc\n" + SERVERS,
        "t.yaml:2: http.keepalive_requests: expected an integer, got 'abc'",
    ),
    (
        "http:\n  keepalive_requests: 1.5\n" + SERVERS,
        "t.yaml:2: http.keepalive_requests: expected an integer, got 1.5",
    ),
    (
        "http:\n  proxy_buffering: 'true'\n" + SERVERS,
        "t.yaml:2: http.proxy_buffering: expected true or false, got 'true'",
    ),
    (
        "http:\n  proxy_buffering: 1\n" + SERVERS,
        "t.yaml:2: http.proxy_buffering: expected true or false, got 1",
    ),
    ("http: [1]\n" + SERVERS, "t.yaml:1: http: expected a mapping, got a list"),
    ("http:\n" + SERVERS, "t.yaml:1: http: expected a mapping, got nothing"),
    ("pid_file: [a]\n" + SERVERS, "t.yaml:1: pid_file: expected a string, got a list"),
    ("- 1\n", "t.yaml:1: expected a mapping, got a list"),
    # ranges and notations
    (
        "http:\n  keepalive_requests: 0\n" + SERVERS,
        "t.yaml:2: http.keepalive_requests: must be >= 1, got 0",
    ),
    (
        "http:\n  client_max_body_size: 10x\n" + SERVERS,
        "t.yaml:2: http.client_max_body_size: expected a size like 512, 64k, 10m or 1g, got '10x'",
    ),
    (
        "http:\n  client_body_buffer_size: 0\n" + SERVERS,
        "t.yaml:2: http.client_body_buffer_size: must be above zero, got 0",
    ),
    (
        "http:\n  proxy_buffers_size: true\n" + SERVERS,
        "t.yaml:2: http.proxy_buffers_size: expected a size like 64k or 10m, got true",
    ),
    (
        "http:\n  send_timeout: 10 s\n" + SERVERS,
        "t.yaml:2: http.send_timeout: expected a duration like 250ms, 30s, 5m or 1h, got '10 s'",
    ),
    (
        "http:\n  client_header_timeout: 0\n" + SERVERS,
        "t.yaml:2: http.client_header_timeout: must be above zero, got 0",
    ),
    (
        "http:\n  client_body_timeout: -1\n" + SERVERS,
        "t.yaml:2: http.client_body_timeout: duration must be a finite number >= 0, got -1",
    ),
    (
        server("    send_timeout: 0s\n" + LOCATIONS),
        "t.yaml:6: servers[0].send_timeout: must be above zero, got '0s'",
    ),
    # top-level scalars
    ("workers: 0\n" + SERVERS, "t.yaml:1: workers: must be >= 1, got 0"),
    ("workers: many\n" + SERVERS, "t.yaml:1: workers: expected an integer, got 'many'"),
    (
        "http_parser: picohttp\n" + SERVERS,
        "t.yaml:1: http_parser: expected one of auto, httptools, h11, got 'picohttp'",
    ),
    (
        "error_log: {level: verbose}\n" + SERVERS,
        "t.yaml:1: error_log.level: expected one of debug, info, warning, error, got 'verbose'",
    ),
    (
        "access_log: {format: yes}\n" + SERVERS,
        "t.yaml:1: access_log.format: expected one of combined, json, off, got yes",
    ),
    (
        "access_log: {flush: -1}\n" + SERVERS,
        "t.yaml:1: access_log.flush: duration must be a finite number >= 0, got -1",
    ),
    (
        "http:\n  client_body_min_rate: fast\n" + SERVERS,
        "t.yaml:2: http.client_body_min_rate: expected a size like 512, 64k, 10m or 1g, got 'fast'",
    ),
    (
        "temp_path: /no/such/dir\n" + SERVERS,
        "t.yaml:1: temp_path: no such directory '/no/such/dir'",
    ),
    # upstreams
    (
        "upstreams:\n  'a b':\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:2: upstreams.a b: upstream names may use only letters, digits, '_', '.', '-'",
    ),
    (
        "upstreams:\n  app:\n    balance: fastest\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.balance: "
        "expected one of round_robin, least_conn, ip_hash, random_two, got 'fastest'",
    ),
    (
        "upstreams:\n  app:\n    balance: least_conn\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers: required",
    ),
    (
        "upstreams:\n  app:\n    servers: []\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers: must not be empty",
    ),
    (
        "upstreams:\n  app:\n    servers:\n      - {address: 'a:1', backup: true}\n" + SERVERS,
        "t.yaml:4: upstreams.app.servers: every server is a backup; one must not be",
    ),
    (
        "upstreams:\n  app:\n    servers:\n      - 'a:1'\n      - {address: 'b:1', weight: 0}\n"
        + SERVERS,
        "t.yaml:5: upstreams.app.servers[1].weight: must be >= 1, got 0",
    ),
    (
        "upstreams:\n  app:\n    servers: [{address: 'a:1', max_fails: -1}]\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0].max_fails: must be >= 0, got -1",
    ),
    (
        "upstreams:\n  app:\n    servers: [{address: 'a:1', backup: 'no'}]\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0].backup: expected true or false, got 'no'",
    ),
    (
        "upstreams:\n  app:\n    servers: [{weight: 2}]\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0].address: required",
    ),
    (
        "upstreams:\n  app:\n    servers: ['a:0']\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0]: port must be a number 1..65535, got 'a:0'",
    ),
    (
        "upstreams:\n  app:\n    servers: [8001]\n" + SERVERS,
        "t.yaml:3: upstreams.app.servers[0]: expected a string, got 8001",
    ),
    (
        "upstreams:\n  app:\n    keepalive: -1\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.keepalive: must be >= 0, got -1",
    ),
    (
        "upstreams:\n  app:\n    connect_timeout: 0s\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.connect_timeout: must be above zero, got '0s'",
    ),
    (
        "upstreams:\n  app:\n    next_upstream: [error, http_500]\n    servers: ['a:1']\n"
        + SERVERS,
        "t.yaml:3: upstreams.app.next_upstream[1]: expected one of error, timeout, "
        "http_502, http_503, http_504, non_idempotent, off, got 'http_500'",
    ),
    (
        "upstreams:\n  app:\n    next_upstream: [error, off]\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.next_upstream: off cannot be combined with other conditions",
    ),
    (
        "upstreams:\n  app:\n    next_upstream_tries: 0\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.next_upstream_tries: must be >= 1, got 0",
    ),
    (
        "upstreams:\n  app:\n    protocol: fastcgi\n    servers: ['a:1']\n" + SERVERS,
        "t.yaml:3: upstreams.app.protocol: expected one of http, uwsgi, got 'fastcgi'",
    ),
    # servers
    ("http: {}\n", "t.yaml:1: servers: required"),
    ("servers: []\n", "t.yaml:1: servers: must not be empty"),
    (server("    locations: []\n"), "t.yaml:6: servers[0].locations: must not be empty"),
    (
        UPSTREAM + "servers:\n  - locations: [{path: /, proxy_pass: app}]\n",
        "t.yaml:5: servers[0].listen: required",
    ),
    (
        UPSTREAM + "servers:\n  - listen: 8080\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen: expected a string, got 8080",
    ),
    (
        UPSTREAM + "servers:\n  - listen: ['127.0.0.1:1', '127.0.0.1:70000']\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen[1]: port must be a number 0..65535, got '127.0.0.1:70000'",
    ),
    (
        UPSTREAM + "servers:\n  - listen: ['*:1', {address: '0.0.0.0:1'}]\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen[1]: 0.0.0.0:1 is listed twice",
    ),
    (
        UPSTREAM + "servers:\n  - listen: [{port: 80}]\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen[0].address: required\n"  # at the `{`: before `port`
        "t.yaml:5: servers[0].listen[0].port: unknown key",
    ),
    (
        UPSTREAM + "servers:\n  - listen: [{}]\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen[0].address: required",
    ),
    (
        UPSTREAM + "servers:\n  - listen: ['*:1', '0.0.0.0:1']\n" + LOCATIONS,
        "t.yaml:5: servers[0].listen[1]: 0.0.0.0:1 is listed twice",
    ),
    (
        server("    server_name: [a.com, 'w*.a.com']\n" + LOCATIONS),
        "t.yaml:6: servers[0].server_name[1]: "
        "bad server name 'w*.a.com': expected a host name or *.domain",
    ),
    (
        server("    server_name: '*'\n" + LOCATIONS),
        "t.yaml:6: servers[0].server_name: bad server name '*': expected a host name or *.domain",
    ),
    (
        server("    trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n" + LOCATIONS),
        "t.yaml:6: servers[0].trusted_proxies[1]: "
        "expected an IP address or CIDR network, got '10.0.0.0/33'",
    ),
    # locations
    (
        location("proxy_pass: app"),
        "t.yaml:7: servers[0].locations[0]: needs one of path (prefix), exact, regex",
    ),
    (
        location("path: /\nexact: /x\nproxy_pass: app"),
        "t.yaml:8: servers[0].locations[0].exact: only one of path, exact, regex; path is given",
    ),
    (
        location("path: /"),
        "t.yaml:7: servers[0].locations[0]: needs a handler: proxy_pass, return, root or alias",
    ),
    (
        location("path: /\nproxy_pass: app\nreturn: {status: 200}"),
        "t.yaml:9: servers[0].locations[0].return: only one handler; proxy_pass is given",
    ),
    (
        location("path: /\nproxy_pass: ap"),
        "t.yaml:8: servers[0].locations[0].proxy_pass: no upstream named 'ap'",
    ),
    (
        location("path: static/\nproxy_pass: app"),
        "t.yaml:7: servers[0].locations[0].path: must start with /, got 'static/'",
    ),
    (
        location("exact: healthz\nproxy_pass: app"),
        "t.yaml:7: servers[0].locations[0].exact: must start with /, got 'healthz'",
    ),
    (
        location("regex: '(unclosed'\nproxy_pass: app"),
        "t.yaml:7: servers[0].locations[0].regex: "
        "bad regex '(unclosed': missing ), unterminated subpattern at position 0",
    ),
    (
        location("path: /\nreturn: {status: 100}"),
        "t.yaml:8: servers[0].locations[0].return.status: must be 200..599, got 100",
    ),
    (
        location("path: /\nreturn: {body: x}"),
        "t.yaml:8: servers[0].locations[0].return.status: required",
    ),
    (
        location("path: /\nreturn: {status: 302}"),
        "t.yaml:8: servers[0].locations[0].return.location: required with status 302",
    ),
    (
        location("path: /\nreturn: {status: 200, body: 42}"),
        "t.yaml:8: servers[0].locations[0].return.body: expected a string, got 42",
    ),
    # name-based virtual hosts must not collide
    (
        UPSTREAM + "servers:\n"
        "  - {listen: '*:80', server_name: [a.com, b.com],\n"
        "     locations: [{path: /, proxy_pass: app}]}\n"
        "  - {listen: ['0.0.0.0:81', '0.0.0.0:80'], server_name: [B.com],\n"
        "     locations: [{path: /, proxy_pass: app}]}\n",
        "t.yaml:7: servers[1].server_name[0]: "
        "'b.com' on 0.0.0.0:80 is already served by servers[0]",
    ),
    (
        UPSTREAM + "servers:\n"
        "  - {listen: ':80', server_name: _, locations: [{path: /, proxy_pass: app}]}\n"
        "  - {listen: '0.0.0.0:80', locations: [{path: /, proxy_pass: app}]}\n",
        "t.yaml:6: servers[1].listen: "
        "a second default server on 0.0.0.0:80 is already served by servers[0]",
    ),
    # tls is built: its files are checked at load (tests/unit/test_tls_config.py has more)
    (
        server(
            "    tls: {certificate: a.pem, key: a.key}\n"
            "    locations: [{path: /, return: {status: 204}}]\n"
        ),
        "t.yaml:6: servers[0].tls.certificate: cannot read a.pem: No such file or directory\n"
        "t.yaml:6: servers[0].tls.key: cannot read a.key: No such file or directory",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error_names_line_and_key_path(text: str, expected: str) -> None:
    assert error(text) == expected


def test_error_carries_where_and_what_separately() -> None:
    with pytest.raises(ConfigError) as info:
        parse(location("path: /\nproxy_pass: ap"))
    assert info.value.where == "t.yaml:8"
    assert info.value.what == "servers[0].locations[0].proxy_pass: no upstream named 'ap'"


# --- metrics ---------------------------------------------------------------------------


def test_metrics_listen_and_path() -> None:
    config = parse("metrics: {listen: '127.0.0.1:9145'}\n" + SERVERS)
    assert config.metrics is not None
    assert str(config.metrics.listen) == "127.0.0.1:9145"
    assert config.metrics.path == "/metrics"
    assert parse("metrics: {listen: '[::1]:9', path: /m}\n" + SERVERS).metrics.path == "/m"  # type: ignore[union-attr]
    assert parse(SERVERS).metrics is None


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ("{path: /m}", "metrics.listen: required"),
        ("{listen: nowhere}", "metrics.listen: expected host:port, [v6]:port or unix:/path"),
        ("{listen: 'unix:/tmp/m.sock'}", "metrics.listen: must be host:port (a TCP address)"),
        ("{listen: '127.0.0.1:9145', path: metrics}", "metrics.path: must be a path like"),
        ("{listen: '127.0.0.1:9145', port: 1}", "metrics.port: unknown key"),
        # The scrape never shares a public server's port (a wildcard takes every address).
        ("{listen: '127.0.0.1:8080'}", "metrics.listen: 127.0.0.1:8080 is taken by servers[0]'s"),
        ("{listen: '*:8080'}", "metrics.listen: 0.0.0.0:8080 is taken by servers[0]'s"),
    ],
)
def test_metrics_errors_name_their_line(metrics: str, expected: str) -> None:
    text = f"metrics: {metrics}\n" + SERVERS.replace("127.0.0.1:0", "*:8080")
    assert error(text).startswith(f"t.yaml:1: {expected}")


def test_metrics_may_take_another_port_of_a_public_host() -> None:
    text = "metrics: {listen: '127.0.0.1:9145'}\n" + SERVERS.replace("127.0.0.1:0", "127.0.0.1:80")
    assert parse(text).metrics is not None


# --- files and YAML itself -----------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line() -> None:
    message = error(SERVERS + "  - listen: [unclosed\n")
    assert message.startswith("t.yaml:7: YAML syntax error: ")


def test_tab_indentation_is_a_syntax_error_at_its_line() -> None:
    assert error("http:\n\tsend_timeout: 1s\n").startswith("t.yaml:2: YAML syntax error: ")


def test_empty_file_is_an_error() -> None:
    assert error("# nothing\n") == "t.yaml:1: the config is empty; it needs at least `servers`"


def test_two_documents_are_an_error() -> None:
    assert error(SERVERS + "---\n" + SERVERS).startswith("t.yaml:6: YAML syntax error: ")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config: No such file or directory"


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))  # a directory cannot be read as a file
    assert info.value.where == str(tmp_path)
    assert info.value.what.startswith("cannot read config: ")


def test_non_utf8_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# caf\xe9\n".encode("latin-1") + SERVERS.encode())
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}: cannot read config: not UTF-8 text"


def test_load_config_errors_name_the_path_given(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(location("path: /\nproxy_pass: ap"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (
        f"{path}:8: servers[0].locations[0].proxy_pass: no upstream named 'ap'"
    )


# --- the contract: ../shared/proxy.example.yaml --------------------------------------


# The drift check exists only where the team's notes sit beside the checkout: a clone
# elsewhere tests its own copy (every test here) and has nothing to compare it with.
if SHARED_EXAMPLE.exists():

    def test_contract_copy_matches_the_shared_contract() -> None:
        assert EXAMPLE.read_text() == SHARED_EXAMPLE.read_text(), "refresh tests/contract/"


def test_every_key_of_the_full_example_is_supported() -> None:
    # Its only error here: a certificate file that exists where the example is deployed.
    with pytest.raises(ConfigError) as info:
        load_config(str(EXAMPLE))
    assert "tls.certificate: cannot read /etc/edgeproxy/site.pem" in str(info.value)
    assert "not supported yet" not in str(info.value)


LATER_LOCATION_KEYS = (
    *("root", "alias", "expires", "index", "autoindex", "gzip_static", "disable_symlinks"),
    *("try_files", "internal"),
)


def _without_later_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """The example minus every key a later release implements (and any location left with
    no handler once its `root` is gone)."""
    for key in ("types", "charset"):
        doc["http"].pop(key)
    for srv in doc["servers"]:
        srv.pop("tls", None)
        for loc in srv["locations"]:
            for key in LATER_LOCATION_KEYS:
                loc.pop(key, None)
        srv["locations"] = [x for x in srv["locations"] if "proxy_pass" in x or "return" in x]
    return doc


def test_example_without_later_keys_loads(tmp_path: Path) -> None:
    doc = _without_later_keys(yaml.safe_load(EXAMPLE.read_text()))
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = load_config(str(path))

    assert config.workers == (os.cpu_count() or 1)
    assert config.pid_file == "edgeproxy.pid"
    assert config.access_log.flush == 1.0
    assert config.worker_connections == 10000
    assert config.metrics is not None and str(config.metrics.listen) == "127.0.0.1:9145"
    app = config.upstreams["app"]
    assert app.balance == "least_conn"
    assert app.queue == QueueConfig(size=100, timeout=30.0)
    assert [p.address for p in app.servers] == [
        Address("unix", path="/run/app/gunicorn.sock"),
        Address("tcp", "127.0.0.1", 8001),
        Address("tcp", "127.0.0.1", 8002),
        Address("tcp", "127.0.0.1", 8003),
    ]
    assert [p.backup for p in app.servers] == [False, False, True, False]
    assert [p.down for p in app.servers] == [False, False, False, True]
    main, tls_less = config.servers
    assert main.server_name == ("example.com", "www.example.com")
    assert main.listen == (Address("tcp", "0.0.0.0", 8080), Address("tcp", "0.0.0.0", 8081))
    assert main.http == HttpSettings()  # the example's http block spells out the defaults
    assert main.http.client_body_min_rate == 500
    assert [(loc.match, loc.pattern) for loc in main.locations] == [
        ("exact", "/healthz"),
        ("regex", r"\.(php|asp)$"),
        ("prefix", "/"),
    ]
    assert tls_less.listen == (Address("tcp", "0.0.0.0", 8443),)
    assert main.proxy_protocol == (Address("tcp", "0.0.0.0", 8081),)
    rate, conns = config.limits["per_ip_rate"], config.limits["per_ip_conns"]
    assert (rate.kind, rate.rate, rate.burst, rate.nodelay) == ("rate", 10.0, 20, True)
    assert (conns.kind, conns.connections, conns.reject_status) == ("connections", 20, 503)
    assert main.limit_conn is conns
    root = main.locations[-1]
    assert root.limit_req is rate
    assert root.access is not None and [rule.allow for rule in root.access] == [False, True, True]


def test_return_variables_are_nginx_names_and_unknown_ones_are_refused() -> None:
    from edgeproxy.config.locations import RETURN_VARIABLES
    from edgeproxy.server.return_handler import _READ

    assert set(RETURN_VARIABLES) == set(_READ)  # what config accepts, the handler fills in
    text = location('path: /\nreturn: {status: 301, location: "https://$hostname$uri"}')
    assert error(text) == (
        "t.yaml:8: servers[0].locations[0].return.location: "
        "unknown variable $hostname (known: $scheme, $host, $request_uri)"
    )
    assert parse(location('path: /\nreturn: {status: 200, body: "costs $5"}'))

"""Every error of a file in one run: independent errors all reported in line order, each as
`file:line: key.path: problem`; a value with an error left out, so that the checks that
depend on it stay quiet; the nearest known key suggested for a misspelt one."""

from __future__ import annotations

import textwrap

import pytest

from edgeproxy.config import parse_config
from edgeproxy.config.loader import MAX_ERRORS
from edgeproxy.errors import ConfigError


def errors(text: str) -> list[str]:
    """The lines of the ConfigError that `text` gets."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "t.yaml")
    assert str(info.value).splitlines() == list(info.value.lines)
    return list(info.value.lines)


# --- several independent errors -----------------------------------------------------


def test_independent_errors_anywhere_in_the_file_are_all_reported_in_line_order() -> None:
    assert errors("""\
        workers: 0
        upstreams:
          app:
            keepalive: -1
            servers: ["127.0.0.1:8001", "127.0.0.1:0"]
        servers:
          - listen: "127.0.0.1:8080"
            send_timeout: never
            locations:
              - {path: /, proxy_pass: app}
              - {path: nope, return: {status: 200}}
              - {path: /b, return: {status: 99}}
          - listen: "127.0.0.1:8081"
            locations: []
        http_parser: fastest
        """) == [
        "t.yaml:1: workers: must be >= 1, got 0",
        "t.yaml:4: upstreams.app.keepalive: must be >= 0, got -1",
        "t.yaml:5: upstreams.app.servers[1]: port must be a number 1..65535, got '127.0.0.1:0'",
        "t.yaml:8: servers[0].send_timeout: "
        "expected a duration like 250ms, 30s, 5m or 1h, got 'never'",
        "t.yaml:11: servers[0].locations[1].path: must start with /, got 'nope'",
        "t.yaml:12: servers[0].locations[2].return.status: must be 200..599, got 99",
        "t.yaml:14: servers[1].locations: must not be empty",
        "t.yaml:15: http_parser: expected one of auto, httptools, h11, got 'fastest'",
    ]


def test_several_bad_keys_of_one_mapping_are_each_reported() -> None:
    assert errors("""\
        http: {send_timeout: 0, keepalive_requests: x, proxy_buffering: 2, gzip: on}
        servers:
          - listen: "127.0.0.1:8080"
            locations: [{path: /, return: {status: 200}}]
        """) == [
        "t.yaml:1: http.send_timeout: must be above zero, got 0",
        "t.yaml:1: http.keepalive_requests: expected an integer, got 'x'",
        "t.yaml:1: http.proxy_buffering: expected true or false, got 2",
        "t.yaml:1: http.gzip: unknown key",  # in the order written on the line
    ]


def test_unknown_duplicate_and_invalid_keys_are_each_reported_and_the_rest_is_read() -> None:
    assert errors("""\
        workers: 1
        workers: 2
        metrics: {}
        colour: blue
        servers:
          - listen: "127.0.0.1:8080"
            locations: [{path: /, return: {status: 200}}]
            keepalive_timeout: -1
        """) == [
        "t.yaml:2: workers: duplicate key",
        "t.yaml:3: metrics.listen: required",
        "t.yaml:4: colour: unknown key",
        "t.yaml:8: servers[0].keepalive_timeout: duration must be a finite number >= 0, got -1",
    ]


def test_the_first_error_is_where_and_what_and_str_is_every_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("workers: 0\nhttp_parser: x\n", "t.yaml")
    assert (info.value.where, info.value.what) == ("t.yaml:1", "servers: required")
    assert str(info.value) == (
        "t.yaml:1: servers: required\n"  # at the mapping that lacks it: line 1, column 1
        "t.yaml:1: workers: must be >= 1, got 0\n"
        "t.yaml:2: http_parser: expected one of auto, httptools, h11, got 'x'"
    )


def test_a_file_with_very_many_errors_shows_the_first_ones_and_counts_the_rest() -> None:
    bad = "".join(f"key{i}: 1\n" for i in range(MAX_ERRORS + 10))
    found = errors(bad + "servers: []\n")
    assert len(found) == MAX_ERRORS + 1
    assert found[0] == "t.yaml:1: key0: unknown key"
    assert found[MAX_ERRORS - 1] == f"t.yaml:{MAX_ERRORS}: key{MAX_ERRORS - 1}: unknown key"
    assert found[-1] == "t.yaml: 11 more errors not shown"  # 10 keys more, and servers


# --- did you mean ------------------------------------------------------------------------

SERVER = """\
servers:
  - listen: "127.0.0.1:8080"
    locations: [{path: /, return: {status: 200}}]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams:\n  app:\n    balanse: least_conn\n    servers: ['a:1']\n" + SERVER,
            "t.yaml:3: upstreams.app.balanse: unknown key; did you mean 'balance'?",
        ),
        (
            "upstreams:\n  app:\n    servers: [{adress: 'a:1'}]\n" + SERVER,
            "t.yaml:3: upstreams.app.servers[0].adress: unknown key; did you mean 'address'?",
        ),
        (
            "upstreams:\n  app:\n    servers: ['a:1']\n    health_check: {intervall: 5s}\n"
            + SERVER,
            "t.yaml:4: upstreams.app.health_check.intervall: unknown key; did you mean 'interval'?",
        ),
        (
            "limits:\n  z: {rate: 1r/s, brust: 5}\n" + SERVER,
            "t.yaml:2: limits.z.brust: unknown key; did you mean 'burst'?",
        ),
        (
            SERVER + "    client_max_body_sise: 1m\n",
            "t.yaml:4: servers[0].client_max_body_sise: unknown key; "
            "did you mean 'client_max_body_size'?",
        ),
        (
            "servers:\n  - listen: ':1'\n    locations: [{path: /, retrun: {status: 200}}]\n",
            "t.yaml:3: servers[0].locations[0].retrun: unknown key; did you mean 'return'?",
        ),
        # only the keys allowed at that place are suggested: a location's, not in a server
        (SERVER + "    proxy_pas: x\n", "t.yaml:4: servers[0].proxy_pas: unknown key"),
        (
            "access_log: {fromat: json}\n" + SERVER,
            "t.yaml:1: access_log.fromat: unknown key; did you mean 'format'?",
        ),
        ("zzz: 1\n" + SERVER, "t.yaml:1: zzz: unknown key"),  # nothing near: no guess
    ],
)
def test_a_misspelt_key_gets_the_nearest_key_allowed_there(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_a_misspelt_required_key_is_not_also_reported_missing() -> None:
    assert errors("""\
        servers:
          - lisen: "127.0.0.1:8080"
            locations:
              - {pth: /, return: {status: 200}}
              - {path: /a, retrun: {status: 200}}
        """) == [
        "t.yaml:2: servers[0].lisen: unknown key; did you mean 'listen'?",
        "t.yaml:4: servers[0].locations[0].pth: unknown key; did you mean 'path'?",
        "t.yaml:5: servers[0].locations[1].retrun: unknown key; did you mean 'return'?",
    ]


def test_a_required_key_missing_with_no_misspelling_near_is_reported() -> None:
    assert errors("""\
        servers:
          - port: 8080
            locations: [{path: /, return: {status: 200}}]
        """) == [
        "t.yaml:2: servers[0].port: unknown key",
        "t.yaml:2: servers[0].listen: required",
    ]


# --- a value with an error is left out; what depends on it stays quiet -------------------


def test_a_location_naming_a_broken_upstream_is_not_reported_but_a_typo_is() -> None:
    assert errors("""\
        upstreams:
          app:
            balanse: least_conn
            servers: ["127.0.0.1:8001"]
          api:
            servers: ["127.0.0.1:8002"]
        servers:
          - listen: "127.0.0.1:8080"
            locations:
              - {path: /, proxy_pass: app}
              - {path: /api, proxy_pass: api}
              - {path: /b, proxy_pass: ap}
              - {path: /c, root: /srv, try_files: [$uri, "@app"]}
        """) == [
        "t.yaml:3: upstreams.app.balanse: unknown key; did you mean 'balance'?",
        "t.yaml:12: servers[0].locations[2].proxy_pass: no upstream named 'ap'",
    ]


def test_upstreams_that_are_not_a_mapping_silence_every_proxy_pass() -> None:
    assert errors("""\
        upstreams: [app]
        servers:
          - listen: "127.0.0.1:8080"
            locations: [{path: /, proxy_pass: app}, {path: /a, proxy_pass: api}]
        """) == ["t.yaml:1: upstreams: expected a mapping, got a list"]


def test_a_key_naming_a_broken_zone_is_not_reported() -> None:
    assert errors("""\
        shared_state: {redis: "http://x"}
        limits:
          per_ip: {rate: 10/s}
          conns: {connections: 10, shared: true}
          local: {rate: 1r/s}
        servers:
          - listen: "127.0.0.1:8080"
            limit_conn: conns
            locations:
              - {path: /, return: {status: 200}, limit_req: per_ip}
              - {path: /b, return: {status: 200}, limit_req: locall}
        """) == [
        "t.yaml:1: shared_state.redis: "
        "expected redis://HOST:PORT/DB, rediss://... or unix:///PATH, got 'http://x'",
        "t.yaml:3: limits.per_ip.rate: expected a rate like 10r/s or 600r/m, got '10/s'",
        "t.yaml:11: servers[0].locations[1].limit_req: no zone named 'locall' in limits",
    ]


def test_checks_across_the_keys_of_a_block_wait_for_its_keys_to_be_right() -> None:
    # a bad interval leaves the health check out: no "timeout must be below interval" echo;
    # a bad peer leaves the pool's servers out: no "every server is a backup" echo
    assert errors("""\
        upstreams:
          app:
            servers: ["a:1"]
            health_check: {interval: 0s, timeout: 2s}
          web:
            servers: [{address: "a:0"}, {address: "b:1", backup: true}]
        servers:
          - listen: "127.0.0.1:8080"
            locations: [{path: /, return: {status: 301}}]
        """) == [
        "t.yaml:4: upstreams.app.health_check.interval: must be above zero, got '0s'",
        "t.yaml:6: upstreams.web.servers[0].address: port must be a number 1..65535, got 'a:0'",
        "t.yaml:9: servers[0].locations[0].return.location: required with status 301",
    ]


def test_a_server_with_a_bad_address_claims_no_name_on_it() -> None:
    assert errors("""\
        servers:
          - listen: "127.0.0.1:8080"
            server_name: a.com
            locations: [{path: /, return: {status: 200}}]
          - listen: ["127.0.0.1:8080x"]
            server_name: a.com
            locations: [{path: /, return: {status: 200}}]
          - listen: ["127.0.0.1:8081", "127.0.0.1:8081"]
            locations: [{path: /, return: {status: 200}}]
        """) == [
        "t.yaml:5: servers[1].listen[0]: port must be a number 0..65535, got '127.0.0.1:8080x'",
        "t.yaml:8: servers[2].listen[1]: 127.0.0.1:8081 is listed twice",
    ]

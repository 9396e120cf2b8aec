"""`access_log.format`: the named formats, and templates split at load time with every
unknown variable refused at its line."""

from __future__ import annotations

import pytest

from edgeproxy.config import parse_config
from edgeproxy.config.log_format import VARIABLES, parse_template
from edgeproxy.config.model import LogTemplate
from edgeproxy.errors import ConfigError

SERVERS = "servers:\n  - listen: '127.0.0.1:0'\n    locations: [{path: /, return: {status: 200}}]\n"


def log_format(text: str) -> str | LogTemplate:
    return parse_config(text + SERVERS, "t.yaml").access_log.format


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text + SERVERS, "t.yaml")
    return str(info.value)


@pytest.mark.parametrize("name", ["combined", "json", "off"])
def test_the_named_formats_stay_words(name: str) -> None:
    assert log_format(f"access_log: {{format: {name}}}\n") == name


def test_a_template_is_split_into_literals_and_variables_once() -> None:
    text = '$remote_addr [$time_local] "$request" ${status}s $http_X_Request_Id'
    template = log_format(f"access_log: {{format: '{text}'}}\n")
    assert template == LogTemplate(
        text,
        (
            ("remote_addr", ""),
            ("", " ["),
            ("time_local", ""),
            ("", '] "'),
            ("request", ""),
            ("", '" '),
            ("status", ""),
            ("", "s "),
            ("http_", "x-request-id"),  # nginx: lowercase, `_` for `-`
        ),
    )


def test_every_variable_of_the_brief_is_known() -> None:
    nginx = {
        "remote_addr", "request", "status", "body_bytes_sent", "request_time",
        "upstream_addr", "upstream_status", "upstream_response_time",
        "upstream_connect_time", "time_local", "time_iso8601", "request_id", "host",
        "request_method", "request_uri", "server_protocol", "bytes_sent", "msec",
        "remote_user",
    }  # fmt: skip
    assert nginx <= VARIABLES
    assert parse_template("$http_user_agent") == (("http_", "user-agent"),)


def test_an_unknown_variable_is_refused_at_its_line() -> None:
    text = "access_log:\n  path: stdout\n  format: '$remote_addr $upstream_adr'\n"
    assert error(text) == (
        "t.yaml:3: access_log.format: unknown variable $upstream_adr in the template "
        "'$remote_addr $upstream_adr'"
    )


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("'cost $ 5'", "a `$` without a variable name at offset 5"),
        ("'${status'", "a `$` without a variable name at offset 0"),
        ("'$http_'", "unknown variable $http_"),  # a prefix needs its field name
    ],
)
def test_a_malformed_template_is_refused(template: str, problem: str) -> None:
    message = error(f"access_log: {{format: {template}}}\n")
    assert message.startswith(f"t.yaml:1: access_log.format: {problem} in the template ")


def test_text_without_a_variable_must_be_a_format_name() -> None:
    assert error("access_log: {format: common}\n") == (
        "t.yaml:1: access_log.format: expected one of combined, json, off, got 'common'"
    )

"""`access_log.format:` a format's name, or a template with nginx's variable names.

A template is split here, once, into literal text and variables (edgeproxy.log_formats
binds each variable to the function that reads it): an unknown variable is a config error
at its line, found by `edgeproxy -t`, never a surprise in the log.
"""

from __future__ import annotations

import re
from typing import Final

from yaml.nodes import Node, ScalarNode

from edgeproxy.config.model import LogTemplate
from edgeproxy.config.nodes import Invalid, describe, word
from edgeproxy.config.schema import Scope

NAMED_FORMATS: Final = ("combined", "json", "off")

# The variables a template may use: nginx's names and meanings (the access log's
# edgeproxy.log_formats.VARIABLE_READERS reads each one; a test checks both agree).
VARIABLES: Final = frozenset(
    {
        "remote_addr",  # the client, as trusted_proxies or the PROXY header resolved it
        "realip_remote_addr",  # the TCP peer (nginx's realip module)
        "client_ip_source",  # edgeproxy's own: peer | xff | proxy_protocol
        "remote_user",  # the user name of Basic authentication
        "time_local",
        "time_iso8601",
        "msec",  # the time the line is written, seconds with milliseconds
        "request",  # the request line: method, target, protocol
        "request_method",
        "request_uri",  # the target as sent, with its query
        "args",
        "query_string",
        "server_protocol",
        "host",  # the request's host, without its port
        "status",
        "body_bytes_sent",
        "bytes_sent",  # head and body
        "request_time",  # seconds, from the head's arrival to the line
        "request_id",
        "pid",
        "upstream_addr",  # every peer tried, "a, b" (as each upstream_* variable)
        "upstream_status",
        "upstream_connect_time",
        "upstream_header_time",
        "upstream_response_time",
    }
)
# Variables named by a prefix and an argument: $http_user_agent is the User-Agent field.
PREFIXES: Final = ("http_",)

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))?")


def parse_template(text: str) -> tuple[tuple[str, str], ...]:
    """`text` as literal parts ("", text) and variables (name, argument); ValueError names
    what is wrong."""
    parts: list[tuple[str, str]] = []
    at = 0
    for match in _VARIABLE.finditer(text):
        if match.start() > at:
            parts.append(("", text[at : match.start()]))
        at = match.end()
        name = match.group(1) or match.group(2)
        if name is None:
            raise ValueError(f"a `$` without a variable name at offset {match.start()}")
        parts.append(_variable(name))
    if at < len(text):
        parts.append(("", text[at:]))
    return tuple(parts)


def _variable(name: str) -> tuple[str, str]:
    if name in VARIABLES:
        return (name, "")
    for prefix in PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            # nginx: $http_x_request_id is the field X-Request-ID.
            return (prefix, name[len(prefix) :].lower().replace("_", "-"))
    raise ValueError(f"unknown variable ${name}")


def read_format(node: Node, path: str, scope: Scope) -> str | LogTemplate:
    """A format's name, or a template (any text with a `$` in it)."""
    text = str(node.value) if isinstance(node, ScalarNode) else None
    if text is None or "$" not in text:
        return word(node, path, NAMED_FORMATS)
    try:
        parts = parse_template(text)
    except ValueError as exc:
        raise Invalid(node, path, f"{exc} in the template {describe(node)}") from None
    return LogTemplate(text, parts)

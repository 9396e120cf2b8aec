"""Access-log line formats: `combined`, `json`, and templates of nginx's variables.

A format is chosen once, when the worker's log is built (`line_format`); a template comes
already split by the config (edgeproxy.config.log_format) and is bound to one field per part
(edgeproxy.logging.templates), so a line is a join of the fields' texts, with no parsing per
request.
"""

from __future__ import annotations

import os

from edgeproxy.config.model import LogTemplate
from edgeproxy.logging.fields import (
    Attempt,
    LineFormat,
    Request,
    TimeCache,
    attempts,
    fixed6,
    json_bytes,
    json_text,
    referer_and_agent,
    text,
)
from edgeproxy.logging.templates import TemplateFormat, variable_readers

__all__ = [
    "Attempt",
    "CombinedFormat",
    "Formats",
    "JsonFormat",
    "LineFormat",
    "Request",
    "TimeCache",
    "times_upstream",
    "variable_readers",
]


class CombinedFormat(LineFormat):
    """nginx's `combined`."""

    def __init__(self, times: TimeCache) -> None:
        self.times = times

    def line(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        head = request.head
        referer, agent = referer_and_agent(head)
        return (
            f"{request.client_ip} - - [{self.times.local(request.started)}] "
            f'"{text(head.method)} {text(head.target)} HTTP/{text(head.version)}" '
            f'{status} {body} "{text(referer)}" "{text(agent)}"\n'
        )


class JsonFormat(LineFormat):
    """One JSON object per line. Written as text rather than through json.dumps: the keys
    and most values need no escaping, and the line costs a fraction of it."""

    def __init__(self, times: TimeCache, pid: int) -> None:
        self.times = times
        self.pid = str(pid)
        # The last Host and its JSON text: a worker's requests mostly name the same host,
        # and comparing bytes costs less than decoding and escaping them.
        self._host = b""
        self._host_json = '"-"'
        # The same for the client and the peer, by identity: a connection's requests share
        # its address object, and a peer's requests its name.
        self._client = JsonMemo()
        self._upstream = JsonMemo()

    def line(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        head = request.head
        referer, agent = referer_and_agent(head)
        started = request.started
        upstream_status = request.upstream_status
        tries = _tries(request) if request.upstream_earlier else ""
        host = head.host
        if host != self._host:
            self._host = host
            self._host_json = json_bytes(host)
        return (
            f'{{"time":"{self.times.local(started)}","pid":{self.pid},'
            f'"request_id":{json_bytes(request.request_id)},'
            f'"client_ip":{self._client.text(request.client_ip)},'
            f'"client_ip_source":"{request.client_ip_source}",'
            # The method is a token and the version two digits (or, never parsed, "-"): the
            # readers refuse other requests, so neither needs escaping.
            f'"method":"{text(head.method)}","target":{json_bytes(head.target)},'
            f'"protocol":"HTTP/{text(head.version)}",'
            f'"status":{status},"body_bytes_sent":{body},"bytes_sent":{sent},'
            f'"request_time":{fixed6(now - started)},'
            f'"upstream_addr":{self._upstream.text(request.upstream_addr)},'
            f'"upstream_status":{str(upstream_status) if upstream_status else "null"},'
            f'"upstream_connect_time":{_json_seconds(request.upstream_connect_time)},'
            f'"upstream_header_time":{_json_seconds(request.upstream_header_time)},'
            f'"upstream_response_time":{_json_seconds(request.upstream_response_time)},'
            f'"host":{self._host_json},'
            f'"referer":{json_bytes(referer)},'
            f'"user_agent":{json_bytes(agent)}{tries}}}\n'
        )


def _tries(request: Request) -> str:
    """Several peers were tried: each attempt, in order (the last is the line's own)."""
    return ',"upstream_tries":[' + ",".join([
        f'{{"addr":{_json_or_null(addr)},"status":{str(code) if code else "null"},'
        f'"connect_time":{_json_seconds(connect)},'
        f'"header_time":{_json_seconds(header)},'
        f'"response_time":{_json_seconds(response)}}}'
        for addr, code, connect, header, response in attempts(request)
    ]) + "]"  # fmt: skip


class JsonMemo:
    """`_json_or_null` of the last string it was given, kept while the same object comes."""

    def __init__(self) -> None:
        self._value = ""
        self._json = "null"

    def text(self, value: str) -> str:
        if value is not self._value:
            self._value = value
            self._json = _json_or_null(value)
        return self._json


def _json_or_null(value: str) -> str:
    """A JSON string, or null for an empty one."""
    return json_text(value) if value else "null"


def _json_seconds(value: float) -> str:
    return fixed6(value) if value >= 0 else "null"


class Formats:
    """The named formats; `line_format` picks one (or binds a template)."""

    def __init__(self) -> None:
        self.times = TimeCache()
        self.pid = os.getpid()  # built in the worker process, after the fork
        self.combined = CombinedFormat(self.times)
        self.json = JsonFormat(self.times, self.pid)

    def line_format(self, format: str | LogTemplate) -> LineFormat:
        if isinstance(format, LogTemplate):
            return TemplateFormat(format, variable_readers(self.times, self.pid))
        return self.json if format == "json" else self.combined


def times_upstream(format: str | LogTemplate) -> bool:
    """Whether the format shows the upstream's times (else no clock is read for them)."""
    if isinstance(format, LogTemplate):
        return any(name.startswith("upstream_") and name.endswith("_time")
                   for name, _ in format.parts)  # fmt: skip
    return format == "json"

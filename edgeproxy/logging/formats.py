"""Access-log line formats: `combined`, `json`, and templates of nginx's variables.

A format is chosen once, when the worker's log is built (`line_format`); a template comes
already split by the config (edgeproxy.config.log_format) and is bound here to one reader
per part, so a line is a join of the readers' results, with no parsing per request.
"""

from __future__ import annotations

import binascii
import os
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quoted  # C: '"..."', escaped
from typing import Protocol

from edgeproxy.config.model import LogTemplate
from edgeproxy.http.events import RequestHead

# An upstream attempt: peer, status, connect, header and response times (-1.0: none).
Attempt = tuple[str, int, float, float, float]


class Request(Protocol):
    """What a log line is made of: any record with these fields (the server's request)."""

    head: RequestHead
    client_ip: str
    client_ip_source: str  # peer | xff | proxy_protocol
    peer_ip: str
    started: float  # wall clock when the request began (0.0 when not read)
    request_id: bytes
    upstream_addr: str  # the peer that answered (or was tried last), or ""
    upstream_status: int  # its status, or 0
    upstream_connect_time: float  # seconds, -1.0 when not measured
    upstream_header_time: float
    upstream_response_time: float
    upstream_earlier: list[Attempt] | None  # the attempts before that one


# (request, status, body bytes sent, bytes sent with the head, time of the line) -> text
LineFormat = Callable[[Request, int, int, int, float], str]


class TimeCache:
    """nginx's $time_local and $time_iso8601, formatted once per second."""

    __slots__ = ("_iso", "_local", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._local = ""
        self._iso = ""

    def _update(self, second: int) -> None:
        self._second = second
        tm = time.localtime(second)
        self._local = time.strftime("%d/%b/%Y:%H:%M:%S %z", tm)
        offset = time.strftime("%z", tm)  # +0100; ISO 8601 as nginx writes it: +01:00
        self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", tm) + offset[:3] + ":" + offset[3:]

    def local(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._update(second)
        return self._local

    def iso8601(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._update(second)
        return self._iso


def _text(value: bytes | None) -> str:
    return value.decode("latin-1") if value else "-"


def _header(request: Request, name: bytes) -> bytes | None:
    for key, value in request.head.headers:
        if key == name:
            return value
    return None


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value >= 0 else "-"  # nginx: milliseconds


def _attempts(request: Request) -> list[Attempt]:
    current = (request.upstream_addr, request.upstream_status, request.upstream_connect_time,
               request.upstream_header_time, request.upstream_response_time)  # fmt: skip
    earlier = request.upstream_earlier
    return [*earlier, current] if earlier else [current]


def _joined(request: Request, show: Callable[[Attempt], str]) -> str:
    """An upstream variable over every attempt, as nginx's: "a, b"."""
    if not (request.upstream_earlier or request.upstream_addr or request.upstream_status):
        return "-"  # no upstream was tried
    return ", ".join([show(attempt) for attempt in _attempts(request)])


def _host(head: RequestHead) -> str:
    """nginx's $host: the request's host, lowercase, without its port."""
    host = head.host
    if not host:
        return "-"
    name = host[: host.find(b"]") + 1] if host[:1] == b"[" else host.partition(b":")[0]
    return name.decode("latin-1").lower()


def _remote_user(request: Request) -> str:
    credentials = _header(request, b"authorization")
    if not credentials or credentials[:6].lower() != b"basic ":
        return "-"
    try:
        decoded = binascii.a2b_base64(credentials[6:].strip())
    except binascii.Error:
        return "-"
    return _text(decoded.partition(b":")[0])


Reader = Callable[[Request, int, int, int, float], str]


def variable_readers(times: TimeCache, pid: int) -> dict[str, Reader]:
    """A reader per variable of edgeproxy.config.log_format.VARIABLES (same names)."""
    pid_text = str(pid)
    return {
        "remote_addr": lambda r, s, b, t, now: r.client_ip or "-",
        "realip_remote_addr": lambda r, s, b, t, now: r.peer_ip or "-",
        "client_ip_source": lambda r, s, b, t, now: r.client_ip_source,
        "remote_user": lambda r, s, b, t, now: _remote_user(r),
        "time_local": lambda r, s, b, t, now: times.local(r.started or now),
        "time_iso8601": lambda r, s, b, t, now: times.iso8601(r.started or now),
        "msec": lambda r, s, b, t, now: f"{now:.3f}",
        "request": lambda r, s, b, t, now: _request_line(r.head),
        "request_method": lambda r, s, b, t, now: _text(r.head.method),
        "request_uri": lambda r, s, b, t, now: _text(r.head.target),
        "args": lambda r, s, b, t, now: _query(r.head),
        "query_string": lambda r, s, b, t, now: _query(r.head),
        "server_protocol": lambda r, s, b, t, now: _protocol(r.head),
        "host": lambda r, s, b, t, now: _host(r.head),
        "status": lambda r, s, b, t, now: str(s),
        "body_bytes_sent": lambda r, s, b, t, now: str(b),
        "bytes_sent": lambda r, s, b, t, now: str(t),
        "request_time": lambda r, s, b, t, now: _seconds(now - r.started if r.started else 0.0),
        "request_id": lambda r, s, b, t, now: _text(r.request_id),
        "pid": lambda r, s, b, t, now: pid_text,
        "upstream_addr": lambda r, s, b, t, now: _joined(r, lambda a: a[0] or "-"),
        "upstream_status": lambda r, s, b, t, now: _joined(r, lambda a: str(a[1]) if a[1] else "-"),
        "upstream_connect_time": lambda r, s, b, t, now: _joined(r, lambda a: _seconds(a[2])),
        "upstream_header_time": lambda r, s, b, t, now: _joined(r, lambda a: _seconds(a[3])),
        "upstream_response_time": lambda r, s, b, t, now: _joined(r, lambda a: _seconds(a[4])),
    }


def _request_line(head: RequestHead) -> str:
    if not head.method:
        return "-"  # never parsed
    return f"{_text(head.method)} {_text(head.target)} HTTP/{_text(head.version)}"


def _protocol(head: RequestHead) -> str:
    return f"HTTP/{_text(head.version)}" if head.version else "-"


def _query(head: RequestHead) -> str:
    return _text(head.target.partition(b"?")[2])


def _header_reader(name: bytes) -> Reader:
    return lambda r, s, b, t, now: _text(_header(r, name))


def _literal(text: str) -> Reader:
    return lambda r, s, b, t, now: text


class TemplateFormat:
    """A template, as one reader per part (literal text included)."""

    __slots__ = ("readers",)

    def __init__(self, template: LogTemplate, readers: dict[str, Reader]) -> None:
        parts: list[Reader] = []
        for name, argument in template.parts:
            if not name:
                parts.append(_literal(argument))
            elif name == "http_":
                parts.append(_header_reader(argument.encode("latin-1")))
            else:
                parts.append(readers[name])  # the config let only known names through
        self.readers = tuple(parts)

    def __call__(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        return "".join([read(request, status, body, sent, now) for read in self.readers]) + "\n"


class Formats:
    """The named formats; `line_format` picks one (or binds a template)."""

    def __init__(self) -> None:
        self.times = TimeCache()
        self.pid = os.getpid()  # built in the worker process, after the fork

    def line_format(self, format: str | LogTemplate) -> LineFormat:
        if isinstance(format, LogTemplate):
            return TemplateFormat(format, variable_readers(self.times, self.pid))
        named: dict[str, LineFormat] = {"combined": self.combined, "json": self.json}
        return named.get(format, self.combined)

    def combined(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        head = request.head
        return (
            f"{request.client_ip} - - [{self.times.local(request.started)}] "
            f'"{_text(head.method)} {_text(head.target)} HTTP/{_text(head.version)}" '
            f'{status} {body} "{_text(_header(request, b"referer"))}" '
            f'"{_text(_header(request, b"user-agent"))}"\n'
        )

    def json(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        """One JSON object per line. Written as text rather than through json.dumps: the
        keys and most values need no escaping, and the line costs a fraction of it."""
        head = request.head
        tries = ""
        if request.upstream_earlier:
            # Several peers were tried: each attempt, in order (the last is the one above).
            tries = ',"upstream_tries":[' + ",".join([
                f'{{"addr":{_json_str(addr)},"status":{code or "null"},'
                f'"connect_time":{_json_seconds(connect)},'
                f'"header_time":{_json_seconds(header)},'
                f'"response_time":{_json_seconds(response)}}}'
                for addr, code, connect, header, response in _attempts(request)
            ]) + "]"  # fmt: skip
        return (
            f'{{"time":"{self.times.local(request.started)}","pid":{self.pid},'
            f'"request_id":{_json_bytes(request.request_id)},'
            f'"client_ip":{_json_str(request.client_ip)},'
            f'"client_ip_source":"{request.client_ip_source}",'
            f'"method":{_json_bytes(head.method)},"target":{_json_bytes(head.target)},'
            f'"protocol":{_quoted("HTTP/" + _text(head.version))},'
            f'"status":{status},"body_bytes_sent":{body},"bytes_sent":{sent},'
            f'"request_time":{now - request.started:.6f},'
            f'"upstream_addr":{_json_str(request.upstream_addr)},'
            f'"upstream_status":{request.upstream_status or "null"},'
            f'"upstream_connect_time":{_json_seconds(request.upstream_connect_time)},'
            f'"upstream_header_time":{_json_seconds(request.upstream_header_time)},'
            f'"upstream_response_time":{_json_seconds(request.upstream_response_time)},'
            f'"host":{_json_bytes(head.host)},'
            f'"referer":{_json_bytes(_header(request, b"referer"))},'
            f'"user_agent":{_json_bytes(_header(request, b"user-agent"))}{tries}}}\n'
        )


def _json_str(value: str) -> str:
    """A JSON string, or null for an empty one."""
    return _quoted(value) if value else "null"


def _json_bytes(value: bytes | None) -> str:
    """Latin-1 bytes as a JSON string (escaped as json.dumps would), "-" when absent."""
    return _quoted(value.decode("latin-1")) if value else '"-"'


def _json_seconds(value: float) -> str:
    return f"{value:.6f}" if value >= 0 else "null"


def times_upstream(format: str | LogTemplate) -> bool:
    """Whether the format shows the upstream's times (else no clock is read for them)."""
    if isinstance(format, LogTemplate):
        return any(name.startswith("upstream_") and name.endswith("_time")
                   for name, _ in format.parts)  # fmt: skip
    return format == "json"

"""Access-log templates: nginx's variables, each read by a field object bound once per format.

A template comes already split by the config (edgeproxy.config.log_format); here each part
becomes a Field, so a line is one native method call per part and a join: no parsing, and in
the compiled build no Python-level call per variable.
"""

from __future__ import annotations

from edgeproxy.config.model import LogTemplate
from edgeproxy.http.events import RequestHead
from edgeproxy.logging.fields import (
    Attempt,
    LineFormat,
    Request,
    TimeCache,
    attempts,
    fixed3,
    header,
    host,
    protocol,
    query,
    remote_user,
    request_line,
    text,
)


class Field:
    """One part of a template: literal text or a variable. `head` is the request's, read
    once per line rather than once per field."""

    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        raise NotImplementedError


class Literal(Field):
    def __init__(self, value: str) -> None:
        self.value = value

    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return self.value


class HeaderField(Field):
    """$http_NAME: the first field called NAME."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return text(header(head, self.name))


class RemoteAddr(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return request.client_ip or "-"


class RealipRemoteAddr(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return request.peer_ip or "-"


class ClientIpSource(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return request.client_ip_source


class RemoteUser(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return remote_user(head)


class TimeLocal(Field):
    def __init__(self, times: TimeCache) -> None:
        self.times = times

    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return self.times.local(request.started or now)


class TimeIso8601(TimeLocal):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return self.times.iso8601(request.started or now)


class Msec(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return fixed3(now)


class RequestLine(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return request_line(head)


class RequestMethod(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return text(head.method)


class RequestUri(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return text(head.target)


class QueryString(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return query(head)


class ServerProtocol(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return protocol(head)


class Host(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return host(head)


class Status(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return str(status)


class BodyBytesSent(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return str(body)


class BytesSent(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return str(sent)


class RequestTime(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        started = request.started
        return seconds(now - started if started else 0.0)


class RequestId(Field):
    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        return text(request.request_id)


class Upstream(Field):
    """An upstream variable: every attempt's value, as nginx's "a, b"; "-" without one."""

    def read(
        self, request: Request, head: RequestHead, status: int, body: int, sent: int, now: float
    ) -> str:
        if request.upstream_earlier:
            return ", ".join([self.show(attempt) for attempt in attempts(request)])
        if request.upstream_addr or request.upstream_status:
            return self.current(request)  # one attempt: no tuple of it made
        return "-"  # no upstream was tried

    def show(self, attempt: Attempt) -> str:
        raise NotImplementedError

    def current(self, request: Request) -> str:
        """The value of the attempt whose fields the request holds itself."""
        raise NotImplementedError


class UpstreamAddr(Upstream):
    def show(self, attempt: Attempt) -> str:
        return attempt[0] or "-"

    def current(self, request: Request) -> str:
        return request.upstream_addr or "-"


class UpstreamStatus(Upstream):
    def show(self, attempt: Attempt) -> str:
        return str(attempt[1]) if attempt[1] else "-"

    def current(self, request: Request) -> str:
        status = request.upstream_status
        return str(status) if status else "-"


class UpstreamConnectTime(Upstream):
    def show(self, attempt: Attempt) -> str:
        return seconds(attempt[2])

    def current(self, request: Request) -> str:
        return seconds(request.upstream_connect_time)


class UpstreamHeaderTime(Upstream):
    def show(self, attempt: Attempt) -> str:
        return seconds(attempt[3])

    def current(self, request: Request) -> str:
        return seconds(request.upstream_header_time)


class UpstreamResponseTime(Upstream):
    def show(self, attempt: Attempt) -> str:
        return seconds(attempt[4])

    def current(self, request: Request) -> str:
        return seconds(request.upstream_response_time)


def seconds(value: float) -> str:
    return fixed3(value) if value >= 0 else "-"  # nginx: milliseconds


def variable_readers(times: TimeCache, pid: int) -> dict[str, Field]:
    """A field per variable of edgeproxy.config.log_format.VARIABLES (same names)."""
    query_string = QueryString()
    return {
        "remote_addr": RemoteAddr(),
        "realip_remote_addr": RealipRemoteAddr(),
        "client_ip_source": ClientIpSource(),
        "remote_user": RemoteUser(),
        "time_local": TimeLocal(times),
        "time_iso8601": TimeIso8601(times),
        "msec": Msec(),
        "request": RequestLine(),
        "request_method": RequestMethod(),
        "request_uri": RequestUri(),
        "args": query_string,
        "query_string": query_string,
        "server_protocol": ServerProtocol(),
        "host": Host(),
        "status": Status(),
        "body_bytes_sent": BodyBytesSent(),
        "bytes_sent": BytesSent(),
        "request_time": RequestTime(),
        "request_id": RequestId(),
        "pid": Literal(str(pid)),  # known when the format is bound, in the worker
        "upstream_addr": UpstreamAddr(),
        "upstream_status": UpstreamStatus(),
        "upstream_connect_time": UpstreamConnectTime(),
        "upstream_header_time": UpstreamHeaderTime(),
        "upstream_response_time": UpstreamResponseTime(),
    }


class TemplateFormat(LineFormat):
    """A template, as one field per part; the line's newline ends the last literal."""

    def __init__(self, template: LogTemplate, readers: dict[str, Field]) -> None:
        parts: list[Field] = []
        for name, argument in template.parts:
            if not name:
                parts.append(Literal(argument))
            elif name == "http_":
                parts.append(HeaderField(argument.encode("latin-1")))
            else:
                parts.append(readers[name])  # the config let only known names through
        last = parts[-1] if parts else None
        if isinstance(last, Literal):
            parts[-1] = Literal(last.value + "\n")
        else:
            parts.append(Literal("\n"))
        self.fields = tuple(parts)

    def line(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        head = request.head
        return "".join(
            [field.read(request, head, status, body, sent, now) for field in self.fields]
        )

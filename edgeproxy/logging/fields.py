"""What every access-log format reads: the request record, the cached times, and the field
texts (request parts, numbers, JSON strings), written for the compiled build.

Times are written without Python's float formatter when that can be done exactly: a json
line holds four of them, and the formatter (it parses its spec, then runs the general
float-to-decimal conversion) costs several times the integer arithmetic and str() used here.
"""

from __future__ import annotations

import binascii
import math
import time
from json.encoder import encode_basestring_ascii
from typing import Final, Protocol

from edgeproxy.http.events import RequestHead

# An upstream attempt: peer, status, connect, header and response times (-1.0: none).
Attempt = tuple[str, int, float, float, float]

# '"..."', escaped as json.dumps would (C). Final: compiled code holds it, no lookup per use.
_json_quoted: Final = encode_basestring_ascii
# Below this a float's product by 1000 or 1e6 is within 2**-12 of the exact product.
_EXACT_BELOW: Final = 4398046511104.0  # 2**42


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


class LineFormat:
    """A line format: `line` makes a request's line (with its newline); calling the format
    does the same. The access log calls `line`, a native call in the compiled build."""

    def line(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        """(request, status, body bytes sent, bytes sent with the head, time of the line)"""
        raise NotImplementedError

    def __call__(self, request: Request, status: int, body: int, sent: int, now: float) -> str:
        return self.line(request, status, body, sent, now)


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


def text(value: bytes | None) -> str:
    return value.decode("latin-1") if value else "-"


def header(head: RequestHead, name: bytes) -> bytes | None:
    """The first field called `name` (lowercase), as nginx's $http_NAME."""
    for key, value in head.headers:
        if key == name:
            return value
    return None


def referer_and_agent(head: RequestHead) -> tuple[bytes | None, bytes | None]:
    """The first Referer and User-Agent fields, in one pass over the fields."""
    referer: bytes | None = None
    agent: bytes | None = None
    for key, value in head.headers:
        if key == b"referer":
            if referer is None:
                referer = value
        elif key == b"user-agent" and agent is None:
            agent = value
    return referer, agent


def request_line(head: RequestHead) -> str:
    if not head.method:
        return "-"  # never parsed
    return f"{text(head.method)} {text(head.target)} HTTP/{text(head.version)}"


def protocol(head: RequestHead) -> str:
    return f"HTTP/{text(head.version)}" if head.version else "-"


def query(head: RequestHead) -> str:
    return text(head.target.partition(b"?")[2])


def host(head: RequestHead) -> str:
    """nginx's $host: the request's host, lowercase, without its port."""
    value = head.host
    if not value:
        return "-"
    name = value[: value.find(b"]") + 1] if value[:1] == b"[" else value.partition(b":")[0]
    return name.decode("latin-1").lower()


def remote_user(head: RequestHead) -> str:
    credentials = header(head, b"authorization")
    if not credentials or credentials[:6].lower() != b"basic ":
        return "-"
    try:
        decoded = binascii.a2b_base64(credentials[6:].strip())
    except binascii.Error:
        return "-"
    return text(decoded.partition(b":")[0])


def attempts(request: Request) -> list[Attempt]:
    current = (request.upstream_addr, request.upstream_status, request.upstream_connect_time,
               request.upstream_header_time, request.upstream_response_time)  # fmt: skip
    earlier = request.upstream_earlier
    return [*earlier, current] if earlier else [current]


def _nearest(scaled: float) -> int:
    """The integer nearest to the exact product that `scaled` (0 < scaled < 2**42) rounds,
    or -1 when `scaled` is too near a tie for its own rounding error to be ruled out."""
    whole = int(scaled)
    fraction = scaled - whole  # exact
    if fraction < 0.499:
        return whole
    if fraction > 0.501:
        return whole + 1
    return -1


def fixed3(value: float) -> str:
    """f"{value:.3f}", byte for byte."""
    scaled = value * 1000.0
    if 0.0 < scaled < _EXACT_BELOW:
        units = _nearest(scaled)
        if units >= 0:
            # The fraction's digits with their leading zeros: those of 1000 + fraction, less
            # its leading 1 (one str and a slice; no padding to look up).
            whole = units // 1000
            return f"{whole}.{str(units - whole * 1000 + 1000)[1:]}"
    elif scaled == 0.0 and math.copysign(1.0, value) > 0.0:
        return "0.000"
    return format(value, ".3f")


def fixed6(value: float) -> str:
    """f"{value:.6f}", byte for byte."""
    scaled = value * 1000000.0
    if 0.0 < scaled < _EXACT_BELOW:
        units = _nearest(scaled)
        if units >= 0:
            if units < 1000000:  # under a second, as most times
                return "0." + str(units + 1000000)[1:]
            whole = units // 1000000
            return f"{whole}.{str(units - whole * 1000000 + 1000000)[1:]}"
    elif scaled == 0.0 and math.copysign(1.0, value) > 0.0:
        return "0.000000"
    return format(value, ".6f")


def json_text(value: str) -> str:
    """A JSON string, escaped as json.dumps would."""
    return _json_quoted(value)


def json_bytes(value: bytes | None) -> str:
    """Latin-1 bytes as a JSON string, "-" when absent."""
    return _json_quoted(value.decode("latin-1")) if value else '"-"'

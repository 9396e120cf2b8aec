"""The message rules every codec shares, and the status each broken request rule gets.

A codec parses the grammar of a head (tokens, request line, field syntax) and refuses what
breaks it with 400 before these rules run. So that a head with several faults gets one
answer whichever codec read it, every rule answered 400 runs before any rule answered with
another status: which fault a codec happens to notice first then never changes the status.

Statuses chosen where RFC 9110/9112 leave a choice (tests/unit/test_request_rules.py holds
both codecs to each):

    fault                                             status  source
    request line not "method SP target SP version"     400    RFC 9112 3 (single spaces)
    empty lines (CRLF) before the request line      ignored   RFC 9112 2.2
    bare LF or bare CR as a line end                   400    RFC 9112 2.2
    a fragment in the request target                   400    RFC 9110 4.2.5 (never sent)
    a version that is not "HTTP/" DIGIT "." DIGIT      400    RFC 9112 2.3 (HTTP/1.32)
    Content-Length not exactly one number ("5, 5")     400    RFC 9110 8.6, RFC 9112 6.3
    both Content-Length and Transfer-Encoding          400    RFC 9112 6.1
    a Transfer-Encoding field naming no coding         400    RFC 9112 6.1 (as llhttp)
    Transfer-Encoding in an HTTP/1.0 request           400    RFC 9112 6.1
    a chunk-size line over MAX_CHUNK_LINE              400    RFC 9112 7.1.1 ("4xx")
    HTTP/1.x with x > 1                         read as 1.1   RFC 9110 2.5
    CONNECT to a target other than host:port           400    RFC 9112 3.2.3
    a major version other than 1 (HTTP/2.0, 9.1)       505    RFC 9110 2.5, 15.6.6
    Transfer-Encoding other than one "chunked"
      (identity, gzip, xchunked, stacked, twice)       501    RFC 9112 6.1 (as nginx)
    CONNECT                                            405    RFC 9110 9.3.6 (no tunnels)
    Expect other than 100-continue (or repeated)       417    RFC 9110 10.1.1
    a WebSocket upgrade that is not a bodiless GET     400    RFC 6455 4.1

Upgrades: an HTTP/1.1 request whose Connection lists "upgrade" and whose Upgrade is exactly
"websocket" is marked `head.upgrade` (the proxy tunnels it after the peer's 101). Any other
Upgrade (h2c, several protocols, HTTP/1.0) is ignored as RFC 9110 7.8 allows: the field is
hop-by-hop, so the request goes on as plain HTTP/1.1 without it.

Where a request has several faults with statuses other than 400, the first in this table
is answered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from edgeproxy.errors import ClientError
from edgeproxy.http.events import RequestHead

BAD_REQUEST: Final = 400
CONNECT_REFUSED: Final = 405
UNSUPPORTED_CODING: Final = 501
UNSUPPORTED_VERSION: Final = 505
EXPECTATION_FAILED: Final = 417
_REASONS: Final = {
    UNSUPPORTED_VERSION: "unsupported HTTP version",
    CONNECT_REFUSED: "CONNECT is not supported",
    UNSUPPORTED_CODING: "unsupported Transfer-Encoding",
}

_HOST_RE: Final = re.compile(
    rb"^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$"
)
# CONNECT's authority-form target (RFC 9112 3.2.3): host and a port, nothing else.
_AUTHORITY_RE: Final = re.compile(
    rb"^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"
)
# Controls other than CR, LF and HTAB; llhttp refuses them, h11 lets some through. Found
# by deleting them (bytes.translate, one C pass) rather than by a regex search, which
# costs several times more per byte.
_CONTROLS: Final = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# Methods are case-sensitive upper-case tokens in practice; nginx refuses anything else.
_METHOD_RE: Final = re.compile(rb"^[A-Z][A-Z0-9_-]*$")
_COMMON_METHODS: Final = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE"}
)
_VERSION_RE: Final = re.compile(rb"^[0-9]\.[0-9]$")
# Single bytes are looked for as ints: `b"_" in name` first tries to read b"_" as an
# integer, and building and clearing that TypeError costs more than the search.
_UNDERSCORE: Final = 0x5F  # "_"
_HASH: Final = 0x23  # "#"
_AT: Final = 0x40  # "@"

# The request fields the shared rules look at (none has an underscore: see the filter).
_HOST, _CONNECTION, _CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT, _UPGRADE = range(6)
_RULE_FIELDS: Final = {
    b"host": _HOST,
    b"connection": _CONNECTION,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
}
_WEBSOCKET: Final = [b"websocket"]  # the one upgrade tunnelled


def check_raw_head(head: bytes | bytearray) -> str | None:
    """What is wrong with the raw head bytes, or None. Shared by both directions."""
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare LF in message head"
    if head.count(b"\r") != crlf:
        return "bare CR in message head"
    if head.find(b"\r\n ") >= 0 or head.find(b"\r\n\t") >= 0:
        return "obsolete line folding in message head"
    if len(head.translate(None, _CONTROLS)) != len(head):
        return "control character in message head"
    return None


# The usual one-token values, already split and lowercased: no work for them per message.
_SINGLE_TOKENS: Final[dict[bytes, list[bytes]]] = {
    value: [value.lower()]
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"chunked", b"100-continue")
}


def comma_tokens(values: list[bytes]) -> Sequence[bytes]:
    """The lowercased tokens of comma-separated field values (read-only: may be shared)."""
    if len(values) == 1:
        common = _SINGLE_TOKENS.get(values[0])
        if common is not None:
            return common
    return [t.strip().lower() for v in values for t in v.split(b",") if t.strip()]


def single_length(values: list[bytes]) -> int | None:
    """The Content-Length; None unless it is exactly one field of digits (as nginx)."""
    if len(values) != 1:
        return None
    value = values[0]
    if not value or len(value) > 18:  # 18 digits cannot overflow a 64-bit integer
        return None
    length = 0
    for char in value:  # a compiled loop: cheaper than int(), and digits only (no sign, no _)
        if char < 48 or char > 57:
            return None
        length = length * 10 + char - 48
    return length


def _refuse(why: str) -> ClientError:
    return ClientError(BAD_REQUEST, why)


def apply_request_rules(head: RequestHead, known_host: bytes) -> bytes:
    """Version, method, framing, target, Host, keep-alive and Expect, identically for every
    codec; raises ClientError. `known_host` is a Host already found valid on this
    connection (clients repeat theirs); returns the Host found valid now."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    hosts: list[bytes] = []
    expect: list[bytes] = []
    upgrade: list[bytes] = []
    underscores = False
    for name, value in head.headers:
        field = _RULE_FIELDS.get(name)  # one lookup rather than five comparisons
        if field is None:
            if _UNDERSCORE in name:
                underscores = True
        elif field == _HOST:
            hosts.append(value)
        elif field == _CONNECTION:
            connection.append(value)
        elif field == _CONTENT_LENGTH:
            lengths.append(value)
        elif field == _TRANSFER_ENCODING:
            codings.append(value)
        elif field == _EXPECT:
            expect.append(value)
        else:
            upgrade.append(value)
    if underscores:
        # nginx's ignore_invalid_headers: WSGI maps X_Foo and X-Foo to one variable.
        keep = [_UNDERSCORE not in item[0] for item in head.headers]
        head.headers = [item for item, kept in zip(head.headers, keep, strict=True) if kept]
        spelled = head.spelled
        if spelled is not None:  # (the same fields, at the same indexes)
            head.spelled = [item for item, kept in zip(spelled, keep, strict=True) if kept]

    # --- every rule answered 400 (see the module docstring for why they come first);
    # the first fault with another status is kept in `status` and answered after them ---
    status = 0
    version = head.version
    http11 = version == b"1.1"
    if not http11 and version != b"1.0":
        if not _VERSION_RE.match(version):
            raise _refuse("malformed HTTP version")
        if version[:2] == b"1.":  # RFC 9110 2.5: a higher minor version is read as ours
            head.version = version = b"1.1"
            http11 = True
        else:
            status = UNSUPPORTED_VERSION
    method = head.method
    if method not in _COMMON_METHODS and not _METHOD_RE.match(method):
        raise _refuse("invalid method")
    if codings:
        if lengths:
            raise _refuse("both Content-Length and Transfer-Encoding")
        if version == b"1.0":
            raise _refuse("Transfer-Encoding in an HTTP/1.0 request")
        tokens = comma_tokens(codings)
        if not tokens or b"" in codings:
            raise _refuse("Transfer-Encoding without a coding")
        if tokens != [b"chunked"] and not status:
            status = UNSUPPORTED_CODING
        head.chunked = True
    elif lengths:
        length = single_length(lengths)
        if length is None:
            raise _refuse("invalid Content-Length")
        head.content_length = length
    target = head.target
    if _HASH in target:
        raise _refuse("fragment in the request target")
    if target[:1] != b"/":
        if method != b"CONNECT":
            _to_origin_form(head)
        elif not _AUTHORITY_RE.match(target):
            raise _refuse("CONNECT without a host:port target")
        elif not status:
            status = CONNECT_REFUSED
    elif method == b"CONNECT":
        raise _refuse("CONNECT without a host:port target")
    if len(hosts) > 1:
        raise _refuse("more than one Host")
    if hosts and not head.host:
        head.host = hosts[0]
    if http11 and not hosts:
        raise _refuse("missing Host")
    host = head.host
    if host and host != known_host:
        if not _HOST_RE.match(host):
            raise _refuse("invalid Host")
        known_host = host
    connection_tokens: Sequence[bytes] = comma_tokens(connection) if connection else ()
    if (
        upgrade
        and http11
        and b"upgrade" in connection_tokens
        and comma_tokens(upgrade) == _WEBSOCKET
    ):
        if method != b"GET" or head.chunked or head.content_length:
            # Where its body would end and the WebSocket's bytes begin is nobody's guess.
            raise _refuse("WebSocket upgrade that is not a GET without a body")
        head.upgrade = True

    # --- the rules with a status of their own ---
    if status:
        raise ClientError(status, _REASONS[status])
    if connection:
        head.keep_alive = (
            b"close" not in connection_tokens if http11 else b"keep-alive" in connection_tokens
        )
    else:
        head.keep_alive = http11
    if expect:
        if comma_tokens(expect) != [b"100-continue"]:
            raise ClientError(EXPECTATION_FAILED, "unsupported Expect")
        head.expect_continue = http11
    return known_host


def _to_origin_form(head: RequestHead) -> None:
    """Absolute-form targets (RFC 9112 3.2.2): the authority replaces Host."""
    target = head.target
    lowered = target[:8].lower()
    if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if not authority or _AT in authority:
            raise _refuse("invalid absolute-form target")
        head.host = authority
        head.target = path
        return
    if target == b"*" and head.method == b"OPTIONS":
        return
    raise _refuse("invalid request target")

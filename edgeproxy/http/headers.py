"""Header rules for proxying: hop-by-hop removal and the fields we set ourselves."""

from __future__ import annotations

from typing import Final

from edgeproxy.http.events import Headers, ResponseHead

# RFC 9110 7.6.1 plus the non-standard ones that still circulate.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request fields replaced by the proxy (set fresh below) or by our own framing.
REQUEST_REPLACED: Final = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"x-request-id",  # the request's id, kept from a trusted proxy or made by us
}

# Response fields we set ourselves: framing, and Date/Server as nginx's proxy_hide_header does.
# X-Request-ID: the client gets the request's own id, whatever the upstream answered.
RESPONSE_REPLACED: Final = HOP_BY_HOP | {b"content-length", b"date", b"server", b"x-request-id"}


# Field names as clients and servers usually spell them, mapped to one shared lowercase
# object: a lookup instead of a lower() and a new bytes object per field, and the shared
# name's hash is computed once for every later set and dict lookup.
_COMMON_NAMES: Final = (
    b"accept", b"accept-encoding", b"accept-language", b"accept-ranges", b"age",
    b"authorization", b"cache-control", b"connection", b"content-encoding",
    b"content-length", b"content-type", b"cookie", b"date", b"etag", b"expect", b"expires",
    b"host", b"if-modified-since", b"if-none-match", b"keep-alive", b"last-modified",
    b"location", b"origin", b"pragma", b"referer", b"server", b"set-cookie",
    b"transfer-encoding", b"upgrade-insecure-requests", b"user-agent", b"vary", b"via",
    b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip",
    b"x-request-id", b"x-requested-with",
)  # fmt: skip
_LOWERCASE: Final[dict[bytes, bytes]] = {}
for _name in _COMMON_NAMES:
    _LOWERCASE[_name] = _name
    _LOWERCASE[b"-".join(part.capitalize() for part in _name.split(b"-"))] = _name


def common_spellings() -> dict[bytes, bytes]:
    """The usual spellings of field names, each mapped to its shared lowercase name."""
    return dict(_LOWERCASE)


def lowercase_name(name: bytes) -> bytes:
    """`name.lower()`, shared for the usual names."""
    common = _LOWERCASE.get(name)
    return common if common is not None else name.lower()


def connection_named(headers: Headers) -> frozenset[bytes]:
    """Field names listed in Connection: they are hop-by-hop for this message only."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(t.strip().lower() for t in value.split(b","))
    names.discard(b"")
    return frozenset(names)


# Connection values that name no other field: the usual ones need no second pass.
PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})


def end_to_end(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """Headers minus `drop` minus whatever Connection names (one pass in the usual case)."""
    kept: Headers = []
    names_fields = False
    for item in headers:
        if item[0] in drop:
            if item[0] == b"connection" and item[1] not in PLAIN_CONNECTION:
                names_fields = True
        else:
            kept.append(item)
    if names_fields:
        named = connection_named(headers)
        kept = [item for item in kept if item[0] not in named]
    return kept


def response_fields(head: ResponseHead) -> Headers:
    """The fields of an upstream response that go on to the client: end to end only
    (RESPONSE_REPLACED and what Connection names dropped), named as the upstream spelled
    them (nginx and HAProxy keep the spelling; some clients and many readers expect it)."""
    return end_to_end_spelled(head.headers, head.spelled, RESPONSE_REPLACED)


def end_to_end_spelled(
    headers: Headers, spelled: Headers | None, replaced: frozenset[bytes]
) -> Headers:
    """end_to_end over the lowercased `headers`, giving the `spelled` pair at the same
    index (the same value object: nothing is copied); `headers` when `spelled` is None."""
    if spelled is None:
        return end_to_end(headers, replaced)
    kept: Headers = []
    names_fields = False
    for index, item in enumerate(headers):
        if item[0] in replaced:
            if item[0] == b"connection" and item[1] not in PLAIN_CONNECTION:
                names_fields = True
        else:
            kept.append(spelled[index])
    if names_fields:
        named = connection_named(headers) | replaced
        kept = [spelled[i] for i, (name, _) in enumerate(headers) if name not in named]
    return kept


def header_values(headers: Headers, wanted: bytes) -> list[bytes]:
    return [value for name, value in headers if name == wanted]

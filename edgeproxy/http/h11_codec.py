"""The reference codec: h11 parses each head strictly (token rules, Host, version).

h11 has opinions on the framing fields of requests (it merges repeated Content-Lengths and
refuses any Transfer-Encoding but chunked, with its own status): it never sees them, so
that the shared rules in edgeproxy.http.rules decide them from the raw values, as they do
for llhttp. What llhttp refuses and h11 takes (a target that is not ASCII) is refused here.

Each head is parsed alone (edgeproxy.http.h11_heads): the readers cut the heads, and
frame the bodies, themselves.
"""

from __future__ import annotations

from typing import Final

import h11

from edgeproxy.errors import ClientError
from edgeproxy.http.events import Headers, RequestHead, ResponseHead
from edgeproxy.http.h11_heads import read_request_head, read_response_head
from edgeproxy.http.interface import MalformedResponse, ResponseParser
from edgeproxy.http.logtext import readable
from edgeproxy.http.response_reader import ResponseReader
from edgeproxy.http.rules import BAD_REQUEST

_FRAMING_FIELDS: Final = (b"content-length", b"transfer-encoding")
_HIDDEN_NAME: Final = b"x"  # what h11 sees instead of a framing field's name


def _hide_framing_fields(head: bytes) -> tuple[bytes, list[tuple[int, bytes, bytes]]]:
    """`head` with the framing fields renamed, and (field index, real name lowercased, real
    name as sent) for each."""
    lowered = head.lower()
    # (find, not `in`: a bytes needle in `in` costs a TypeError raised and cleared first)
    if lowered.find(b"\ncontent-length:") < 0 and lowered.find(b"\ntransfer-encoding:") < 0:
        return head, []
    lines = head.split(b"\r\n")
    hidden: list[tuple[int, bytes, bytes]] = []
    for index in range(1, len(lines)):
        line = lines[index]
        colon = line.find(b":")
        as_sent = line[:colon] if colon > 0 else b""
        name = as_sent.lower()
        if name in _FRAMING_FIELDS:
            hidden.append((index - 1, name, as_sent))
            lines[index] = _HIDDEN_NAME + line[colon:]
    return b"\r\n".join(lines), hidden


class H11Codec:
    name = "h11"
    needs_raw_checks = True

    def parse_request_head(self, head: bytes) -> RequestHead:
        shown, hidden = _hide_framing_fields(head)
        try:
            event = read_request_head(shown)
        except h11.ProtocolError as exc:
            raise ClientError(BAD_REQUEST, readable(str(exc))) from None
        if not isinstance(event, h11.Request):
            raise ClientError(BAD_REQUEST, "incomplete request head")
        if not event.target.isascii():
            raise ClientError(BAD_REQUEST, "request target is not ASCII")
        headers: Headers = list(event.headers)
        spelled: Headers = event.headers.raw_items()
        for index, name, as_sent in hidden:
            if index >= len(headers) or headers[index][0] != _HIDDEN_NAME:
                # Lines h11 split or joined otherwise (bare LF, obs-fold): the raw checks
                # refuse such heads before they get here.
                raise ClientError(BAD_REQUEST, "malformed request head")
            headers[index] = (name, headers[index][1])
            spelled[index] = (as_sent, spelled[index][1])
        return RequestHead(event.method, event.target, event.http_version, headers, spelled)

    def parse_response_head(self, head: bytes) -> ResponseHead:
        if head.lower().count(b"\ncontent-length:") > 1:
            # h11 merges identical duplicates; nginx refuses them from upstreams too.
            raise MalformedResponse("duplicate Content-Length")
        try:
            event = read_response_head(head)
        except h11.ProtocolError as exc:
            raise MalformedResponse(readable(str(exc))) from None
        if not isinstance(event, h11.Response | h11.InformationalResponse):
            raise MalformedResponse("incomplete response head")
        return ResponseHead(
            event.status_code,
            event.reason,
            event.http_version,
            list(event.headers),  # lowercased
            event.headers.raw_items(),  # as received
        )

    def response_parser(self) -> ResponseParser:
        return ResponseReader(self, self.parse_response_head)

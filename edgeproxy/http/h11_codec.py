"""The reference codec: h11 parses each head strictly (token rules, Host, version).

h11 has opinions on the framing fields of requests (it merges repeated Content-Lengths and
refuses any Transfer-Encoding but chunked, with its own status): it never sees them, so
that the shared rules in edgeproxy.http.rules decide them from the raw values, as they do
for llhttp. What llhttp refuses and h11 takes (a target that is not ASCII) is refused here.
"""

from __future__ import annotations

from typing import Final

import h11

from edgeproxy.errors import ClientError
from edgeproxy.http.events import Headers, RequestHead, ResponseHead
from edgeproxy.http.interface import MalformedResponse, ResponseParser
from edgeproxy.http.logtext import readable
from edgeproxy.http.response_reader import ResponseReader
from edgeproxy.http.rules import BAD_REQUEST

# A throwaway request that moves a client-role h11 connection to the state where it
# accepts a response. Our reader frames the body; h11 only needs to see the head. It
# proposes an upgrade so that h11 parses a 101 too: whether one was asked for is the
# response reader's business.
_PRIMING_REQUEST: Final = h11.Request(
    method="GET",
    target="/",
    headers=[("Host", "upstream"), ("Connection", "upgrade"), ("Upgrade", "websocket")],
)

_FRAMING_FIELDS: Final = (b"content-length", b"transfer-encoding")
_HIDDEN_NAME: Final = b"x"  # what h11 sees instead of a framing field's name


def _hide_framing_fields(head: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """`head` with the framing fields renamed, and (field index, real name) for each."""
    lowered = head.lower()
    # (find, not `in`: a bytes needle in `in` costs a TypeError raised and cleared first)
    if lowered.find(b"\ncontent-length:") < 0 and lowered.find(b"\ntransfer-encoding:") < 0:
        return head, []
    lines = head.split(b"\r\n")
    hidden: list[tuple[int, bytes]] = []
    for index in range(1, len(lines)):
        line = lines[index]
        colon = line.find(b":")
        name = line[:colon].lower() if colon > 0 else b""
        if name in _FRAMING_FIELDS:
            hidden.append((index - 1, name))
            lines[index] = _HIDDEN_NAME + line[colon:]
    return b"\r\n".join(lines), hidden


class H11Codec:
    name = "h11"
    needs_raw_checks = True

    def parse_request_head(self, head: bytes) -> RequestHead:
        shown, hidden = _hide_framing_fields(head)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(shown) + 1)
        conn.receive_data(shown)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ClientError(BAD_REQUEST, readable(str(exc))) from None
        if not isinstance(event, h11.Request):
            raise ClientError(BAD_REQUEST, "incomplete request head")
        if not event.target.isascii():
            raise ClientError(BAD_REQUEST, "request target is not ASCII")
        headers: Headers = list(event.headers)
        for index, name in hidden:
            if index >= len(headers) or headers[index][0] != _HIDDEN_NAME:
                # Lines h11 split or joined otherwise (bare LF, obs-fold): the raw checks
                # refuse such heads before they get here.
                raise ClientError(BAD_REQUEST, "malformed request head")
            headers[index] = (name, headers[index][1])
        return RequestHead(event.method, event.target, event.http_version, headers)

    def parse_response_head(self, head: bytes) -> ResponseHead:
        if head.lower().count(b"\ncontent-length:") > 1:
            # h11 merges identical duplicates; nginx refuses them from upstreams too.
            raise MalformedResponse("duplicate Content-Length")
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(head) + 1)
        conn.send(_PRIMING_REQUEST)
        conn.send(h11.EndOfMessage())
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise MalformedResponse(readable(str(exc))) from None
        if not isinstance(event, h11.Response | h11.InformationalResponse):
            raise MalformedResponse("incomplete response head")
        return ResponseHead(
            status=event.status_code,
            reason=event.reason,
            version=event.http_version,
            headers=list(event.headers),
        )

    def response_parser(self) -> ResponseParser:
        return ResponseReader(self, self.parse_response_head)

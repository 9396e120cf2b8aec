"""The reference codec: h11 parses each head strictly (token rules, Host, version).

h11 has opinions on the framing fields of requests (it merges repeated Content-Lengths and
refuses any Transfer-Encoding but chunked, with its own status): it never sees them, so
that the shared rules in edgeproxy.http.rules decide them from the raw values, as they do
for llhttp. What llhttp refuses and h11 takes (a target that is not ASCII) is refused here.

Each head gets a new h11.Connection, fed that head alone; the readers cut the heads, and
frame the bodies, themselves. A Connection costs little to make; what costs is moving one
through a cycle: keeping one per TCP connection and cycling it with start_next_cycle
would mean sending a response (or a request) through h11 for every head read, only so
that both sides reach DONE. A response head needs no request before it either: h11 reads
a final response on a fresh client-role connection (a server may answer before any
request, with a 408 say). Only an informational (1xx) head needs a request sent first.
"""

from __future__ import annotations

from typing import Final

import h11

from edgeproxy.errors import ClientError
from edgeproxy.http.events import Headers, RequestHead, ResponseHead
from edgeproxy.http.interface import MalformedResponse, ResponseParser
from edgeproxy.http.response_reader import ResponseReader
from edgeproxy.http.rules import BAD_REQUEST

# A throwaway request that moves a client-role h11 connection to the state where it
# accepts an informational (1xx) response. It proposes an upgrade so that h11 parses a
# 101 too: whether one was asked for is the response reader's business.
_PRIMING_REQUEST: Final = h11.Request(
    method="GET",
    target="/",
    headers=[("Host", "upstream"), ("Connection", "upgrade"), ("Upgrade", "websocket")],
)

_END: Final = h11.EndOfMessage()
# "HTTP/d.d SP" is 9 bytes: the status code's first digit follows (h11 refuses any other
# status line, primed or not).
_STATUS_CLASS: Final = 9
_INFORMATIONAL: Final = 0x31  # "1"

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
            raise ClientError(BAD_REQUEST, str(exc)) from None
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
        if len(head) > _STATUS_CLASS and head[_STATUS_CLASS] == _INFORMATIONAL:
            conn.send(_PRIMING_REQUEST)
            conn.send(_END)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise MalformedResponse(str(exc)) from None
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

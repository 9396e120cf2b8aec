"""The reference codec: h11 parses each head strictly (token rules, Host, version)."""

from __future__ import annotations

import h11

from edgeproxy.errors import ClientError
from edgeproxy.http.events import RequestHead, ResponseHead
from edgeproxy.http.interface import MalformedResponse, ResponseParser
from edgeproxy.http.response_reader import ResponseReader

# A throwaway request that moves a client-role h11 connection to the state where it
# accepts a response. Our reader frames the body; h11 only needs to see the head.
_PRIMING_REQUEST = h11.Request(method="GET", target="/", headers=[("Host", "upstream")])


class H11Codec:
    name = "h11"
    needs_raw_checks = True

    def parse_request_head(self, head: bytes) -> RequestHead:
        if head.lower().count(b"\ncontent-length:") > 1:
            # h11 merges identical duplicates; nginx (and llhttp) refuse them.
            raise ClientError(400, "duplicate Content-Length")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ClientError(exc.error_status_hint or 400, str(exc)) from None
        if not isinstance(event, h11.Request):
            raise ClientError(400, "incomplete request head")
        return RequestHead(
            method=event.method,
            target=event.target,
            version=event.http_version,
            headers=list(event.headers),
        )

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
            raise MalformedResponse(str(exc)) from None
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

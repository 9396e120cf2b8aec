"""Request ids: made per worker, kept from a trusted proxy only, sent on by both upstream
protocols in place of whatever the client sent."""

from __future__ import annotations

import ipaddress
import re

from edgeproxy.config import parse_config
from edgeproxy.http.codec import CODECS
from edgeproxy.http.events import RequestHead
from edgeproxy.server.body import RequestBody
from edgeproxy.server.phases import ClientAddressPhase
from edgeproxy.server.request import Request, Route
from edgeproxy.server.request_id import RequestIds
from edgeproxy.server.response import Answer
from edgeproxy.server.return_handler import AnswerHandler
from edgeproxy.upstream.http1 import Http1Protocol
from edgeproxy.upstream.uwsgi import UwsgiProtocol, decode_packet

_SERVER = parse_config(
    'servers: [{listen: ["127.0.0.1:0"], locations: [{path: /, return: {status: 200}}]}]', "t"
).servers[0]
_ROUTE = Route(_SERVER, None, AnswerHandler(Answer(200)), (), b"")
OURS = b"0123456789abcdef0123456789abcdef"


def test_ids_are_32_hex_digits_unique_within_and_across_workers() -> None:
    first, second = RequestIds(), RequestIds()  # two workers
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
    # One worker's: its prefix, then its counter (past each 256th, where the digits change).
    assert [int(request_id[16:], 16) for request_id in ids[:1000]] == list(range(1, 1001))
    assert {request_id[:16] for request_id in ids[:1000]} == {ids[0][:16]}


def request(peer_ip: str, headers: list[tuple[bytes, bytes]]) -> Request:
    head = RequestHead(b"GET", b"/", b"1.1", headers)
    return Request(head, _ROUTE, RequestBody(0, ""), peer_ip, 0.0, OURS)


PHASE = ClientAddressPhase([ipaddress.ip_network("10.0.0.0/8")])
FROM_LB = [(b"x-forwarded-for", b"203.0.113.5"), (b"x-request-id", b"lb-42")]


def test_a_trusted_proxy_names_the_client_and_the_id() -> None:
    kept = request("10.0.0.1", FROM_LB)
    assert PHASE.check(kept) is None
    assert (kept.client_ip, kept.client_ip_source, kept.request_id) == (
        "203.0.113.5", "xff", b"lb-42"
    )  # fmt: skip


def test_a_trusted_proxy_without_them_leaves_the_peer_and_our_id() -> None:
    plain = request("10.0.0.1", [])
    PHASE.check(plain)
    assert (plain.client_ip, plain.client_ip_source, plain.request_id) == ("10.0.0.1", "peer", OURS)


def test_anyone_else_gets_our_id_and_is_the_client() -> None:
    other = request("192.0.2.1", FROM_LB)
    PHASE.check(other)
    assert (other.client_ip, other.client_ip_source, other.request_id) == (
        "192.0.2.1", "peer", OURS
    )  # fmt: skip


def head_with_client_id() -> RequestHead:
    head = RequestHead(b"GET", b"/", b"1.1", [(b"host", b"t"), (b"x-request-id", b"forged")])
    head.host = b"t"
    return head


def test_http_upstreams_get_our_id_once() -> None:
    sent = Http1Protocol(CODECS["h11"]()).encode_request_head(
        head_with_client_id(), b"t", "192.0.2.1", "192.0.2.1", 0, True, lambda: (0, 0),
        b"http", OURS,
    )  # fmt: skip
    fields = [line for line in sent.split(b"\r\n") if line.lower().startswith(b"x-request-id")]
    assert fields == [b"x-request-id: " + OURS]


def test_uwsgi_upstreams_get_our_id_once() -> None:
    packet = UwsgiProtocol(CODECS["h11"]()).encode_request_head(
        head_with_client_id(), b"t", "192.0.2.1", "192.0.2.1", 0, True, lambda: (80, 5555),
        b"http", OURS,
    )  # fmt: skip
    variables, _ = decode_packet(packet)
    assert [value for key, value in variables if key == b"HTTP_X_REQUEST_ID"] == [OURS]

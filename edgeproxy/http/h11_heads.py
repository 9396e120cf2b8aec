"""One complete message head through h11: the h11.Request or response event it parses to.

Two ways, with the same answers (tests/unit/test_h11_heads.py holds them to it):

- directly through h11's own head readers, the functions an h11.Connection parses a head
  with. The Connection around them runs a state machine on every event (keep-alive,
  100-continue, protocol switches, the body reader to come, a request to be sent before
  an informational response is accepted) that costs more than the parsing itself, and
  whose answers the shared rules and readers work out anyway. The readers are private to
  h11: should a release move them, the second way is used (and a test fails, to say so);
- through a new h11.Connection per head (h11's public interface). Keeping one Connection
  per TCP connection would not help: cycling it with start_next_cycle needs both sides
  DONE, that is a response (or a request) sent through h11 for every head read.

Errors are h11.ProtocolError (a LocalProtocolError from the readers, a RemoteProtocolError
from a Connection, with the same message).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import h11

# A throwaway request that moves a client-role Connection to the state where it accepts
# an informational (1xx) response. It proposes an upgrade so that h11 parses a 101 too:
# whether one was asked for is the response reader's business.
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

HeadReader = Callable[[Any], object]  # h11's: a ReceiveBuffer in, an event (or None) out


def _h11_readers() -> tuple[type[Any] | None, HeadReader | None, HeadReader | None]:
    """h11's ReceiveBuffer and its request-head and response-head readers (Nones when
    this h11 has them elsewhere)."""
    try:
        from h11._readers import READERS
        from h11._receivebuffer import ReceiveBuffer

        request = READERS[(h11.CLIENT, h11.IDLE)]
        response = READERS[(h11.SERVER, h11.SEND_RESPONSE)]
    except (ImportError, KeyError):
        return None, None, None
    if not (callable(request) and callable(response)):
        return None, None, None
    return ReceiveBuffer, request, response


_FOUND: Final = _h11_readers()
_BUFFER: Final = _FOUND[0]
_REQUEST_READER: Final = _FOUND[1]
_RESPONSE_READER: Final = _FOUND[2]
DIRECT: Final = _BUFFER is not None  # whether heads go through h11's readers directly


def read_directly(reader: HeadReader, head: bytes) -> object:
    assert _BUFFER is not None
    buffer = _BUFFER()
    buffer += head
    return reader(buffer)


def request_through_connection(head: bytes) -> object:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    return conn.next_event()


def response_through_connection(head: bytes) -> object:
    # A client-role Connection reads a final response with no request sent (a server may
    # answer before any request, with a 408 say); only a 1xx needs one sent first.
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(head) + 1)
    if len(head) > _STATUS_CLASS and head[_STATUS_CLASS] == _INFORMATIONAL:
        conn.send(_PRIMING_REQUEST)
        conn.send(_END)
    conn.receive_data(head)
    return conn.next_event()


def read_request_head(head: bytes) -> object:
    """The event of a complete request head; raises h11.ProtocolError."""
    reader = _REQUEST_READER
    if reader is not None:
        return read_directly(reader, head)
    return request_through_connection(head)


def read_response_head(head: bytes) -> object:
    """The event of a complete response head; raises h11.ProtocolError."""
    reader = _RESPONSE_READER
    if reader is not None:
        return read_directly(reader, head)
    return response_through_connection(head)

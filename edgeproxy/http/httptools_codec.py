"""The fast codec: llhttp (via httptools, as uvicorn uses it) parses heads in C.

llhttp's own opinions on framing fields and versions are switched off (its "leniencies") so
that the shared rules in edgeproxy.http.rules decide them identically for every codec; its
strict grammar checks (tokens, request line, header characters) stay on, and what it lets
through that h11 refuses (several spaces in the request line, stray bytes before it) is
refused here. llhttp knows a fixed list of methods: a head with any other method is handed
to the h11 codec, so that every method the shared rules accept is forwarded.

Request heads arrive one complete head at a time (the reader cuts them, which keeps
pipelining and the size limits in one place), so one llhttp parser serves every
connection of the worker: after a bodiless request it is ready for the next head, and it
is replaced only after a head that announces a body, an upgrade or an error. Once llhttp
has accepted a head, its fields are split in one call (as for responses, see
httptools_response), not handed over by a Python callback each.
"""

from __future__ import annotations

from typing import Final

import httptools

from edgeproxy.errors import ClientError
from edgeproxy.http.events import RequestHead
from edgeproxy.http.h11_codec import H11Codec
from edgeproxy.http.httptools_response import lenient, response_parser, split_fields
from edgeproxy.http.interface import ResponseParser
from edgeproxy.http.rules import BAD_REQUEST, check_raw_head

_VERSIONS: Final = {b"1.1": b"1.1", b"1.0": b"1.0"}  # one shared object per usual version
_H: Final = 0x48  # "H", as in "HTTP/1.1"


def _new_request_parser(callbacks: object) -> httptools.HttpRequestParser:
    parser = lenient(httptools.HttpRequestParser(callbacks))
    # Any "HTTP/d.d" is left to the shared rules (HTTP/1.8 is read as 1.1, HTTP/9.1 is 505).
    parser.set_dangerous_leniencies(lenient_version=True)
    return parser


def _other_method(head: bytes) -> RequestHead:
    """A head llhttp refused for its method alone: parsed by h11, which takes any token
    (the shared rules then decide), after the raw checks llhttp would have made."""
    problem = check_raw_head(head)
    if problem:
        raise ClientError(BAD_REQUEST, problem)
    return _H11.parse_request_head(head)


_H11: Final = H11Codec()


class HttptoolsCodec:
    name = "httptools"
    needs_raw_checks = False

    __slots__ = ("_head_done", "_message_done", "_parser", "_url")

    def __init__(self) -> None:
        self._parser = _new_request_parser(self)
        self._url = b""
        self._head_done = False
        self._message_done = False

    def parse_request_head(self, head: bytes) -> RequestHead:
        self._url = b""
        self._head_done = self._message_done = False
        parser = self._parser
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            # CONNECT or Upgrade: the head is complete (the shared rules decide); llhttp
            # would take what follows as another protocol, so the next head gets a new one.
            self._parser = _new_request_parser(self)
        except httptools.HttpParserError as exc:
            self._parser = _new_request_parser(self)
            # PRI is llhttp's HTTP/2 preface: any other use of it is another method.
            if isinstance(exc, httptools.HttpParserInvalidMethodError) or head[:4] == b"PRI ":
                return _other_method(head)
            raise ClientError(BAD_REQUEST, f"malformed request head: {exc}") from None
        if not self._message_done:
            # llhttp now waits for a body (or is past an upgrade): the next head needs a
            # fresh parser. The body itself is framed by the shared reader.
            self._parser = _new_request_parser(self)
        if not self._head_done:
            raise ClientError(400, "incomplete request head")
        # llhttp checked each part of the request line, but allows several spaces between
        # them, bytes before it, and no version at all (HTTP/0.9): only "METHOD SP target
        # SP HTTP/d.d" has this length with an H where the version starts (RFC 9112 3;
        # llhttp's other protocols, RTSP/d.d and ICE/d.d, do not).
        method = parser.get_method()
        url = self._url
        line_end = head.find(b"\r\n")
        if line_end != len(method) + len(url) + 10 or head[line_end - 8] != _H:
            raise ClientError(BAD_REQUEST, "malformed request line")
        version = head[line_end - 3 : line_end]
        try:  # the head ends at its blank line (the reader cut it there)
            _, headers, spelled = split_fields(head, 0, len(head) - 4)
        except ValueError as exc:  # (llhttp refuses such a head first)
            raise ClientError(BAD_REQUEST, f"malformed request head: {exc}") from None
        return RequestHead(method, url, _VERSIONS.get(version, version), headers, spelled)

    def response_parser(self) -> ResponseParser:
        return response_parser()

    # --- llhttp callbacks for request heads ---

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_message_complete(self) -> None:
        self._message_done = True

"""The fast codec: llhttp (via httptools, as uvicorn uses it) parses heads in C.

llhttp's own opinions on framing fields are switched off (its "leniencies") so that the
shared rules in edgeproxy.http.reader decide them identically for every codec; its strict
grammar checks (tokens, request line, header characters) stay on.

Request heads arrive one complete head at a time (the reader cuts them, which keeps
pipelining and the size limits in one place), so one llhttp parser serves every
connection of the worker: after a bodiless request it is ready for the next head, and it
is replaced only after a head that announces a body, an upgrade or an error.
"""

from __future__ import annotations

import httptools

from edgeproxy.errors import ClientError
from edgeproxy.http.events import Headers, RequestHead
from edgeproxy.http.headers import lowercase_name
from edgeproxy.http.httptools_response import HttptoolsResponseParser, lenient
from edgeproxy.http.interface import ResponseParser

_VERSIONS = {b"1.1": b"1.1", b"1.0": b"1.0"}  # one shared object per usual version


def _new_request_parser(callbacks: object) -> httptools.HttpRequestParser:
    return lenient(httptools.HttpRequestParser(callbacks))


class HttptoolsCodec:
    name = "httptools"
    needs_raw_checks = False

    __slots__ = ("_head_done", "_headers", "_message_done", "_parser", "_url")

    def __init__(self) -> None:
        self._parser = _new_request_parser(self)
        self._url = b""
        self._headers: Headers = []
        self._head_done = False
        self._message_done = False

    def parse_request_head(self, head: bytes) -> RequestHead:
        self._url = b""
        self._headers = []
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
            raise ClientError(400, f"malformed request head: {exc}") from None
        if not self._message_done:
            # llhttp now waits for a body (or is past an upgrade): the next head needs a
            # fresh parser. The body itself is framed by the shared reader.
            self._parser = _new_request_parser(self)
        if not self._head_done:
            raise ClientError(400, "incomplete request head")
        # llhttp checked the request line: it ends in "HTTP/d.d" unless it has no version
        # (HTTP/0.9). Slicing it out is cheaper than llhttp's get_http_version().
        line_end = head.find(b"\r\n")
        # (No negative start: the compiled build's slicing does not wrap one around.)
        protocol = head[line_end - 8 : line_end] if line_end >= 8 else b""
        if protocol[:5] != b"HTTP/":
            raise ClientError(400, "request line without an HTTP version")
        version = protocol[5:]
        return RequestHead(
            parser.get_method(), self._url, _VERSIONS.get(version, version), self._headers
        )

    def response_parser(self) -> ResponseParser:
        return HttptoolsResponseParser()

    # --- llhttp callbacks for request heads ---

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((lowercase_name(name), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_message_complete(self) -> None:
        self._message_done = True

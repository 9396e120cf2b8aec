"""The fast codec: llhttp (via httptools, as uvicorn uses it) parses each head in C.

llhttp's own opinions on framing fields are switched off (its "leniencies") so that the
shared rules in edgeproxy.http.reader decide them identically for every codec; its strict
grammar checks (tokens, request line, header characters) stay on.
"""

from __future__ import annotations

import httptools

from edgeproxy.errors import ClientError
from edgeproxy.http.codec import MalformedResponse, ResponseParser
from edgeproxy.http.events import Headers, RequestHead, ResponseHead
from edgeproxy.http.httptools_response import HttptoolsResponseParser


class _Collector:
    """Receives llhttp's callbacks for one head."""

    __slots__ = ("complete", "headers", "reason", "url")

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: Headers = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip(b" \t")))

    def on_headers_complete(self) -> None:
        self.complete = True


def _lenient(parser: httptools.HttpRequestParser | httptools.HttpResponseParser) -> None:
    parser.set_dangerous_leniencies(
        lenient_transfer_encoding=True, lenient_chunked_length=True, lenient_keep_alive=True
    )


class HttptoolsCodec:
    name = "httptools"
    needs_raw_checks = False

    def parse_request_head(self, head: bytes) -> RequestHead:
        collector = _Collector()
        parser = httptools.HttpRequestParser(collector)
        _lenient(parser)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # CONNECT or Upgrade: the head is complete; the shared rules decide
        except httptools.HttpParserError as exc:
            raise ClientError(400, f"malformed request head: {exc}") from None
        if not collector.complete:
            raise ClientError(400, "incomplete request head")
        version = parser.get_http_version().encode()
        if version == b"0.9":
            raise ClientError(400, "request line without an HTTP version")
        return RequestHead(
            method=parser.get_method(),
            target=collector.url,
            version=version,
            headers=collector.headers,
        )

    def parse_response_head(self, head: bytes) -> ResponseHead:
        collector = _Collector()
        parser = httptools.HttpResponseParser(collector)
        _lenient(parser)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            raise MalformedResponse(str(exc)) from None
        if not collector.complete:
            raise MalformedResponse("incomplete response head")
        return ResponseHead(
            status=parser.get_status_code(),
            reason=collector.reason,
            version=parser.get_http_version().encode(),
            headers=collector.headers,
        )

    def response_parser(self) -> ResponseParser:
        return HttptoolsResponseParser()

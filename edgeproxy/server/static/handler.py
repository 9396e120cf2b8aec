"""The static files handler: a location with `root` or `alias`."""

from __future__ import annotations

import os

from edgeproxy.config.model import HttpSettings, StaticFiles
from edgeproxy.server.request import Client, Handler, Request, Responder
from edgeproxy.server.response import Answer
from edgeproxy.server.static.encodings import VARY
from edgeproxy.server.static.lookup import Found, Locator
from edgeproxy.server.static.paths import Refused
from edgeproxy.server.static.responder import FileResponder, Part
from edgeproxy.server.static.types import TypeTable
from edgeproxy.server.static.validators import (
    NOT_MODIFIED,
    check_conditions,
    if_range_holds,
    parse_range,
)

_GET = b"GET"
_HEAD = b"HEAD"
_NOT_ALLOWED = Answer(405, [(b"Allow", b"GET, HEAD")])
_ACCEPT_RANGES = (b"Accept-Ranges", b"bytes")
_HTML = b"text/html"
# Answers with the standard error page, built once each.
_ERRORS: dict[int, Answer] = {}


def _error(status: int) -> Answer:
    answer = _ERRORS.get(status)
    if answer is None:
        answer = _ERRORS[status] = Answer(status)
    return answer


class StaticHandler:
    """Answers GET and HEAD with files beneath the location's directory.

    `fallback` is the handler of try_files' last `@NAME` entry: it answers when no file
    does, and answers every method other than GET and HEAD ("static first, then the app").
    """

    __slots__ = ("cache_control", "fallback", "locator", "types", "types_for")

    def __init__(self, spec: StaticFiles, fallback: Handler | None = None) -> None:
        self.locator = Locator(spec)
        self.fallback = fallback
        self.cache_control: tuple[bytes, bytes] | None = None
        if spec.expires is not None:
            self.cache_control = (b"Cache-Control", b"max-age=%d" % int(spec.expires))
        # The type table of the settings last seen: a location belongs to one server, so
        # this is built once.
        self.types_for: HttpSettings | None = None
        self.types = TypeTable((), None)

    def start(self, request: Request, client: Client) -> Responder | None:
        head = request.head
        method = head.method
        if method != _GET and method != _HEAD:
            if self.fallback is not None:
                return self.fallback.start(request, client)
            client.out.send_answer(_NOT_ALLOWED)
            return None
        settings = request.route.server.http
        if settings is not self.types_for:
            self.types = TypeTable(settings.types, settings.charset)
            self.types_for = settings
        fields = _fields(head.headers)
        try:
            found = self.locator.find(head.target, fields.get(b"accept-encoding"), self.types)
        except Refused as refused:
            client.out.send_answer(_error(refused.status))
            return None
        except OSError:
            client.out.send_answer(_error(500))
            return None
        if found.file is not None:
            return self.send_file(found, fields, method == _GET, client)
        if found.fallback and self.fallback is not None:
            return self.fallback.start(request, client)
        if found.redirect:
            client.out.send_head(301, [(b"Location", found.redirect)], 0)
        else:
            content_type = self.types.table.get("html", _HTML)
            client.out.send_answer(Answer(200, [(b"Content-Type", content_type)], found.page))
        return None

    def send_file(
        self, found: Found, fields: dict[bytes, bytes], get: bool, client: Client
    ) -> Responder | None:
        out = client.out
        file = found.file
        assert file is not None
        validators = [(b"ETag", file.etag), (b"Last-Modified", file.last_modified)]
        if self.cache_control is not None:
            validators.append(self.cache_control)
        if found.vary:
            validators.append(VARY)
        status = check_conditions(fields, file.etag, file.mtime, True)
        if status:
            file.release()
            if status == NOT_MODIFIED:
                out.send_head(NOT_MODIFIED, validators, None)
            else:
                out.send_answer(_error(status))
            return None
        headers = [(b"Content-Type", file.content_type), *validators, _ACCEPT_RANGES]
        if found.encoding:
            headers.append((b"Content-Encoding", found.encoding))
        size = file.size
        parts: list[Part] = [(0, size)]
        status = 200
        length = size
        range_field = fields.get(b"range")
        if range_field is not None and get and size > 0:
            if_range = fields.get(b"if-range")
            ranges = None
            if if_range is None or if_range_holds(if_range, file.etag, file.mtime):
                ranges = parse_range(range_field, size)
            if ranges is not None:
                if not ranges:
                    file.release()
                    headers = [(b"Content-Range", b"bytes */%d" % size), *validators]
                    out.send_head(416, headers, 0)
                    return None
                status = 206
                if len(ranges) == 1:
                    first, length = ranges[0]
                    parts = [(first, length)]
                    span = b"bytes %d-%d/%d" % (first, first + length - 1, size)
                    headers.append((b"Content-Range", span))
                else:
                    boundary = os.urandom(12).hex().encode()
                    parts, length = _multipart(ranges, size, file.content_type, boundary)
                    kind = b"multipart/byteranges; boundary=" + boundary
                    headers[0] = (b"Content-Type", kind)
        data = file.data
        if data is not None and status == 200:  # a small file: head and body in one write
            out.send_head(200, headers, length, body=data)
            file.release()
            return None
        out.send_head(status, headers, length)
        if not get or length == 0:
            out.finish()
            file.release()
            return None
        responder = FileResponder(client, file, parts)
        return None if responder.send() else responder


def _fields(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Request fields by name; repeated lines of a list field (If-None-Match) joined."""
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        seen = fields.get(name)
        fields[name] = value if seen is None else seen + b", " + value
    return fields


def _multipart(
    ranges: list[tuple[int, int]], size: int, content_type: bytes, boundary: bytes
) -> tuple[list[Part], int]:
    """The parts of a multipart/byteranges body and its length."""
    parts: list[Part] = []
    length = 0
    for first, count in ranges:
        part_head = b"\r\n--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n" % (
            boundary,
            content_type,
            first,
            first + count - 1,
            size,
        )
        parts += (part_head, (first, count))
        length += len(part_head) + count
    tail = b"\r\n--%s--\r\n" % boundary
    parts.append(tail)
    return parts, length + len(tail)

"""The static files handler: a location with `root` or `alias`."""

from __future__ import annotations

import errno
import os

from edgeproxy.config.model import HttpSettings, StaticFiles
from edgeproxy.server.request import Client, Request, Responder
from edgeproxy.server.response import Answer
from edgeproxy.server.static.encodings import SIBLINGS, VARY, choose
from edgeproxy.server.static.files import OpenFile, is_directory, is_regular
from edgeproxy.server.static.opener import FORBIDDEN_ERRNOS, NOT_FOUND_ERRNOS, O_DIR, open_beneath
from edgeproxy.server.static.paths import Refused, decode_segments, relative_segments, target_path
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
_NOT_ALLOWED = Answer(405, [(b"allow", b"GET, HEAD")])
_ACCEPT_RANGES = (b"accept-ranges", b"bytes")
# Answers with the standard error page, built once.
_ERRORS = {status: Answer(status) for status in (400, 403, 404, 412, 500)}


class Found:
    """What a path names: a file to send (maybe a precompressed sibling, then `encoding`
    says which; `vary` when the file has siblings), or a redirect to the `/` form."""

    __slots__ = ("encoding", "file", "redirect", "vary")

    def __init__(
        self,
        file: OpenFile | None,
        redirect: bytes = b"",
        encoding: bytes = b"",
        vary: bool = False,
    ) -> None:
        self.file = file
        self.redirect = redirect
        self.encoding = encoding
        self.vary = vary


class StaticHandler:
    """Answers GET and HEAD with files beneath the location's directory."""

    __slots__ = ("cache_control", "directory", "spec", "strip", "types", "types_for")

    def __init__(self, spec: StaticFiles) -> None:
        self.spec = spec
        self.strip = list(spec.strip)
        self.directory = spec.directory
        if spec.alias_file:  # an exact location's alias names the file: open it from its dir
            self.directory = os.path.dirname(spec.directory.rstrip("/")) or "/"
        self.cache_control: tuple[bytes, bytes] | None = None
        if spec.expires is not None:
            self.cache_control = (b"cache-control", b"max-age=%d" % int(spec.expires))
        # The type table of the settings last seen: a location belongs to one server, so
        # this is built once.
        self.types_for: HttpSettings | None = None
        self.types = TypeTable((), None)

    def start(self, request: Request, client: Client) -> Responder | None:
        head = request.head
        method = head.method
        if method != _GET and method != _HEAD:
            client.out.send_answer(_NOT_ALLOWED)
            return None
        settings = request.route.server.http
        if settings is not self.types_for:
            self.types = TypeTable(settings.types, settings.charset)
            self.types_for = settings
        fields = dict(head.headers)
        try:
            found = self.find(head.target, fields.get(b"accept-encoding"))
        except Refused as refused:
            client.out.send_answer(_ERRORS[refused.status])
            return None
        if found.file is None:
            client.out.send_head(301, [(b"location", found.redirect)], 0)
            return None
        return self.send_file(found, fields, method == _GET, client)

    # --- from the target to an open file ---

    def find(self, target: bytes, accept_encoding: bytes | None) -> Found:
        path = target_path(target)
        segments, directory = decode_segments(path)
        if self.spec.alias_file:
            segments, directory = [os.path.basename(self.spec.directory.rstrip("/"))], False
        elif self.strip:
            segments = relative_segments(segments, self.strip)
        relative = "/".join(segments)
        try:
            dir_fd = os.open(self.directory, O_DIR)
        except OSError as e:
            raise _refusal(e) from None
        try:
            file: OpenFile | None
            if directory:
                file, relative = self._index(dir_fd, relative)
            else:
                file = self._file(dir_fd, relative)
            if file is None:
                path, _, query = target.partition(b"?")
                return Found(None, path + b"/" + (b"?" + query if query else b""))
            if not self.spec.gzip_static:
                return Found(file)
            return self._variant(dir_fd, relative, file, accept_encoding)
        finally:
            os.close(dir_fd)

    def _variant(
        self, dir_fd: int, relative: str, file: OpenFile, accept_encoding: bytes | None
    ) -> Found:
        """The file or the precompressed sibling the client takes (gzip_static)."""
        siblings: list[tuple[bytes, OpenFile]] = []
        for suffix, coding in SIBLINGS:
            try:
                fd = open_beneath(dir_fd, relative + suffix, self.spec.disable_symlinks)
            except OSError:
                continue  # no sibling (or one we may not read): the file as it is
            st = os.fstat(fd)
            if is_regular(st):
                siblings.append((coding, OpenFile(fd, st, file.content_type)))
            else:
                os.close(fd)
        if not siblings:
            return Found(file)
        chosen = choose(accept_encoding, tuple(coding for coding, _ in siblings))
        found = Found(file, vary=True)
        for coding, sibling in siblings:
            if coding == chosen:
                file.release()
                found = Found(sibling, encoding=coding, vary=True)
            else:
                sibling.release()
        return found

    def _file(self, dir_fd: int, relative: str) -> OpenFile | None:
        """The regular file at `relative`; None for a directory (redirected to its `/`)."""
        mode = self.spec.disable_symlinks
        try:
            fd = open_beneath(dir_fd, relative, mode)
        except OSError as e:
            raise _refusal(e) from None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if is_regular(st):
            return OpenFile(fd, st, self.types.content_type(relative))
        os.close(fd)
        if is_directory(st):
            return None
        raise Refused(404)  # a device, fifo or socket is not a static file

    def _index(self, dir_fd: int, relative: str) -> tuple[OpenFile, str]:
        mode = self.spec.disable_symlinks
        prefix = relative + "/" if relative else ""
        for name in self.spec.index:
            try:
                fd = open_beneath(dir_fd, prefix + name, mode)
            except OSError as e:
                if e.errno in NOT_FOUND_ERRNOS or e.errno == errno.EISDIR:
                    continue
                raise _refusal(e) from None
            st = os.fstat(fd)
            if is_regular(st):
                return OpenFile(fd, st, self.types.content_type(name)), prefix + name
            os.close(fd)
        # No index: 403 for a directory that exists (never a listing), else 404.
        try:
            os.close(open_beneath(dir_fd, relative, mode, directory=True))
        except OSError as e:
            raise _refusal(e) from None
        raise Refused(403)

    # --- the response ---

    def send_file(
        self, found: Found, fields: dict[bytes, bytes], get: bool, client: Client
    ) -> Responder | None:
        out = client.out
        file = found.file
        assert file is not None
        validators = [(b"etag", file.etag), (b"last-modified", file.last_modified)]
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
                out.send_answer(_ERRORS[status])
            return None
        headers = [(b"content-type", file.content_type), *validators, _ACCEPT_RANGES]
        if found.encoding:
            headers.append((b"content-encoding", found.encoding))
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
                    headers = [(b"content-range", b"bytes */%d" % size), *validators]
                    out.send_head(416, headers, 0)
                    return None
                status = 206
                if len(ranges) == 1:
                    first, length = ranges[0]
                    parts = [(first, length)]
                    span = b"bytes %d-%d/%d" % (first, first + length - 1, size)
                    headers.append((b"content-range", span))
                else:
                    boundary = os.urandom(12).hex().encode()
                    parts, length = _multipart(ranges, size, file.content_type, boundary)
                    kind = b"multipart/byteranges; boundary=" + boundary
                    headers[0] = (b"content-type", kind)
        out.send_head(status, headers, length)
        if not get or length == 0:
            out.finish()
            file.release()
            return None
        responder = FileResponder(client, file, parts)
        return None if responder.send() else responder


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


def _refusal(error: OSError) -> Refused:
    if error.errno in NOT_FOUND_ERRNOS:
        return Refused(404)
    if error.errno in FORBIDDEN_ERRNOS:
        return Refused(403)
    return Refused(500)

"""From a request target to what answers it: a file (or its precompressed sibling), a
directory's index or listing, a redirect to a directory's `/` form, or the try_files
fallback. Refusals are raised as `Refused(status)`."""

from __future__ import annotations

import errno
import os
import time

from edgeproxy.config.model import StaticFiles
from edgeproxy.server.static.cache import Entry, FileCache, unchanged
from edgeproxy.server.static.encodings import SIBLINGS, choose
from edgeproxy.server.static.files import OpenFile, is_directory, is_regular
from edgeproxy.server.static.listing import listing
from edgeproxy.server.static.opener import FORBIDDEN_ERRNOS, NOT_FOUND_ERRNOS, O_DIR, open_beneath
from edgeproxy.server.static.paths import (
    Refused,
    decode_segments,
    relative_segments,
    split_segments,
    target_path,
)
from edgeproxy.server.static.types import TypeTable


class Found:
    """What answers a request; exactly one of `file`, `redirect`, `page`, `fallback`."""

    __slots__ = ("encoding", "fallback", "file", "page", "redirect", "vary")

    def __init__(self) -> None:
        self.file: OpenFile | None = None
        self.encoding = b""  # the sibling's Content-Encoding when `file` is one
        self.vary = False  # the file has precompressed siblings
        self.redirect = b""  # Location of a 301 to the directory's `/` form
        self.page = b""  # an autoindex listing
        self.fallback = False  # try_files found nothing: the `@NAME` upstream answers


def _file_found(file: OpenFile) -> Found:
    found = Found()
    found.file = file
    return found


def _fallback() -> Found:
    found = Found()
    found.fallback = True
    return found


class Locator:
    """Finds what a target names beneath one location's directory."""

    __slots__ = ("alias_name", "cache", "directory", "spec", "strip")

    def __init__(self, spec: StaticFiles) -> None:
        self.spec = spec
        self.strip = list(spec.strip)
        self.directory = spec.directory
        self.alias_name = ""
        self.cache = FileCache()
        if spec.alias_file:  # an exact location's alias names the file: open it from its dir
            name = spec.directory.rstrip("/")
            self.directory = os.path.dirname(name) or "/"
            self.alias_name = os.path.basename(name)

    def find(self, target: bytes, accept_encoding: bytes | None, types: TypeTable) -> Found:
        path = target_path(target)
        now = time.monotonic()
        entry = self.cache.get(path, now)
        if entry is not None:
            found = _choose(entry, accept_encoding)
            file = found.file
            assert file is not None
            if unchanged(file):
                file.acquire()
                return found
            self.cache.discard(path)  # changed in place: resolve it again
        try:
            segments, directory = decode_segments(path)
        except Refused:
            # A path that can name no file (a dotfile such as /.env, `..`): with
            # an `@NAME` fallback it is the app's to answer, as any other missing file.
            if self.spec.try_files and self.spec.try_files[-1].startswith("@"):
                return _fallback()
            raise
        try:
            dir_fd = os.open(self.directory, O_DIR)
        except OSError as e:
            raise refusal(e) from None
        try:
            if self.spec.try_files:
                found = self._try_files(dir_fd, segments, directory, types)
            else:
                found = self._uri(dir_fd, segments, directory, types, target)
            file = found.file
            if file is None:
                return found
            siblings = self._siblings(dir_fd, file) if self.spec.gzip_static else ()
        finally:
            os.close(dir_fd)
        entry = Entry(file, siblings, now)
        self.cache.put(path, entry)
        found = _choose(entry, accept_encoding)
        assert found.file is not None
        found.file.acquire()
        return found

    # --- one URI ---

    def _relative(self, segments: list[str]) -> str:
        if self.alias_name:
            return self.alias_name
        return "/".join(relative_segments(segments, self.strip) if self.strip else segments)

    def _uri(
        self,
        dir_fd: int,
        segments: list[str],
        directory: bool,
        types: TypeTable,
        target: bytes | None,
    ) -> Found:
        """What the path names; a directory named without its `/` is redirected to it when
        `target` is the request's own (not a try_files entry)."""
        relative = self._relative(segments)
        if directory and not self.alias_name:
            return self._directory(dir_fd, relative, "/" + "/".join(segments) + "/", types)
        file = self._file(dir_fd, relative, types)
        if file is not None:
            return _file_found(file)
        if target is None:
            raise Refused(404)
        found = Found()
        path, _, query = target.partition(b"?")
        found.redirect = path + b"/" + (b"?" + query if query else b"")
        return found

    def _file(self, dir_fd: int, relative: str, types: TypeTable) -> OpenFile | None:
        """The regular file at `relative`; None for a directory."""
        try:
            fd = open_beneath(dir_fd, relative, self.spec.disable_symlinks)
        except OSError as e:
            raise refusal(e) from None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if is_regular(st):
            return OpenFile(fd, st, types.content_type(relative), relative)
        os.close(fd)
        if is_directory(st):
            return None
        raise Refused(404)  # a device, fifo or socket is not a static file

    def _directory(self, dir_fd: int, relative: str, uri: str, types: TypeTable) -> Found:
        """A directory's first index file, else its listing (autoindex), else 403."""
        mode = self.spec.disable_symlinks
        prefix = relative + "/" if relative else ""
        for name in self.spec.index:
            try:
                fd = open_beneath(dir_fd, prefix + name, mode)
            except OSError as e:
                if e.errno in NOT_FOUND_ERRNOS or e.errno == errno.EISDIR:
                    continue
                raise refusal(e) from None
            st = os.fstat(fd)
            if is_regular(st):
                return _file_found(OpenFile(fd, st, types.content_type(name), prefix + name))
            os.close(fd)
        try:
            sub_fd = open_beneath(dir_fd, relative, mode, directory=True)
        except OSError as e:
            raise refusal(e) from None
        try:
            if not self.spec.autoindex:
                raise Refused(403)  # a directory without an index: never a listing
            found = Found()
            found.page = listing(sub_fd, uri)
            return found
        finally:
            os.close(sub_fd)

    # --- try_files ---

    def _try_files(
        self, dir_fd: int, segments: list[str], directory: bool, types: TypeTable
    ) -> Found:
        """Each entry but the last is taken if it exists (`…/` as a directory, else as a
        file); the last is the fallback: `@NAME`, `=CODE`, or a URI that must exist."""
        uri = "/" + "/".join(segments) + ("/" if directory and segments else "")
        entries = self.spec.try_files
        for entry in entries[:-1]:
            try:
                found = self._entry(dir_fd, entry.replace("$uri", uri), types)
            except (Refused, OSError):
                continue
            if found is not None:
                return found
        last = entries[-1]
        if last.startswith("@"):
            return _fallback()
        if last.startswith("="):
            raise Refused(int(last[1:]))
        entry_segments, entry_directory = split_segments(last.replace("$uri", uri))
        return self._uri(dir_fd, entry_segments, entry_directory, types, None)

    def _entry(self, dir_fd: int, path: str, types: TypeTable) -> Found | None:
        segments, directory = split_segments(path)
        relative = self._relative(segments)
        if directory:
            return self._directory(dir_fd, relative, "/" + "/".join(segments) + "/", types)
        file = self._file(dir_fd, relative, types)
        return _file_found(file) if file is not None else None

    # --- precompressed siblings ---

    def _siblings(self, dir_fd: int, file: OpenFile) -> tuple[tuple[bytes, OpenFile], ...]:
        """The precompressed siblings of `file` that exist (gzip_static)."""
        siblings: list[tuple[bytes, OpenFile]] = []
        for suffix, coding in SIBLINGS:
            relative = file.relative + suffix
            try:
                fd = open_beneath(dir_fd, relative, self.spec.disable_symlinks)
            except OSError:
                continue  # no sibling (or one we may not read): the file as it is
            st = os.fstat(fd)
            if is_regular(st):
                siblings.append((coding, OpenFile(fd, st, file.content_type, relative)))
            else:
                os.close(fd)
        return tuple(siblings)


def _choose(entry: Entry, accept_encoding: bytes | None) -> Found:
    """The file or the sibling the client takes (not yet acquired)."""
    found = Found()
    found.file = entry.file
    siblings = entry.siblings
    if siblings:
        found.vary = True
        chosen = choose(accept_encoding, tuple(coding for coding, _ in siblings))
        for coding, sibling in siblings:
            if coding == chosen:
                found.file = sibling
                found.encoding = coding
    return found


def refusal(error: OSError) -> Refused:
    if error.errno in NOT_FOUND_ERRNOS:
        return Refused(404)
    if error.errno in FORBIDDEN_ERRNOS:
        return Refused(403)
    return Refused(500)

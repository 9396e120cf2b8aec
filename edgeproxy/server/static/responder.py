"""Sending a file response's body: byte strings and file regions, as the client takes them."""

from __future__ import annotations

import logging

from edgeproxy.server.request import Client
from edgeproxy.server.static.files import OpenFile

log = logging.getLogger("edgeproxy.static")

# A body part: bytes written as they are, or a region (offset, length) of the file.
Part = bytes | tuple[int, int]


class FileResponder:
    """Writes the parts in order while the client is writable; the connection calls
    `on_client_writable` when there is room again (send_timeout runs meanwhile)."""

    __slots__ = ("client", "file", "index", "offset", "parts", "remaining")

    def __init__(self, client: Client, file: OpenFile, parts: list[Part]) -> None:
        self.client = client
        self.file: OpenFile | None = file
        self.parts = parts
        self.index = 0
        self.offset = 0  # in the current region
        self.remaining = -1  # of the current region; -1: not started

    def send(self) -> bool:
        """Write while the client keeps up; True once the whole body is written."""
        file = self.file
        if file is None:
            return False
        out = self.client.out
        parts = self.parts
        try:
            while self.index < len(parts) and out.writable:
                part = parts[self.index]
                if isinstance(part, bytes):
                    out.write(part)
                    self.index += 1
                    continue
                if self.remaining < 0:
                    self.offset, self.remaining = part
                sent = out.write_file(file.fd, self.offset, self.remaining)
                self.offset += sent
                self.remaining -= sent
                if self.remaining <= 0:
                    self.index += 1
                    self.remaining = -1
        except ConnectionError:  # sendfile met a client that closed: it is gone
            self._release()
            self.client.abort()
            return False
        except OSError as e:  # the file shrank under us: the announced length cannot be kept
            log.error("static file %s: %s; dropping the connection", file.relative, e)
            self._release()
            self.client.abort()
            return False
        if self.index < len(parts):
            return False
        out.finish()
        self._release()
        return True

    def _release(self) -> None:
        if self.file is not None:
            self.file.release()
            self.file = None

    def on_client_writable(self) -> None:
        if self.send():
            self.client.handler_done()

    def on_client_full(self) -> None:
        pass

    def client_gone(self) -> None:
        self._release()

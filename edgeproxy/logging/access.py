"""The access log: lines batched, and written off the event loop.

Access-log lines are formatted per request (cheaply: the timestamp is cached per second),
collected in a list, and handed as one block to a writer thread `access_log.flush` seconds
after the first of them, or as soon as FLUSH_LINES lines wait, so a slow disk or a full
pipe never stalls the event loop. A line thus waits in memory at most `flush` seconds
(while the loop runs): that is what a killed worker can lose. With `flush: 0` nothing
waits: each line is written by the event loop as its request ends (a target that cannot
take it at once, such as a full pipe, is handed to the writer thread from then on).
Closing the log (graceful exit) and reopening it (USR1) write the waiting lines first.

The log can be reopened (USR1, after logrotate moved the file): the writer thread
switches to the new file between two blocks, so no line is lost or split.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
import time
from typing import Final

from edgeproxy.config.model import AccessLogConfig
from edgeproxy.logging.formats import Formats, Request, times_upstream

FLUSH_LINES: Final = 512  # lines that make a block without waiting for the flush interval
# Bound once: compiled code would look `time` up, then its `time`, at each line.
_wall_clock: Final = time.time


def _open_target(path: str) -> int:
    if path == "stdout":
        return sys.stdout.fileno()
    if path == "stderr":
        return sys.stderr.fileno()
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


class AccessLog:
    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self.enabled = config.format != "off"
        self._format = Formats().line_format(config.format)
        # Whether requests measure their upstream's times for this log's lines.
        self.times_upstream = self.enabled and times_upstream(config.format)
        self._interval = max(config.flush, 0.0)  # seconds a line may wait; 0: no waiting
        self._lines: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        # bytes: a block to write; int: a freshly opened file to switch to; None: stop.
        self._queue: queue.SimpleQueue[bytes | int | None] = queue.SimpleQueue()
        self._fd = _open_target(config.path) if self.enabled else -1
        # The writer thread; once started, it owns self._fd. (Not `_thread`: mypyc names
        # the C field after the attribute, and `__thread` is a C keyword.)
        self._writer: threading.Thread | None = None
        if self.enabled and self._interval > 0:
            self._start_writer()

    def log(self, request: Request, status: int, body_bytes: int, bytes_sent: int) -> None:
        """A finished request's line; `bytes_sent` counts the response's head too."""
        if not self.enabled:
            return
        line = self._format.line(request, status, body_bytes, bytes_sent, _wall_clock())
        if not self._interval:
            self._write_at_once(line.encode("utf-8", "backslashreplace"))
            return
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Hand the waiting lines to the writer thread."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._lines:
            block = "".join(self._lines).encode("utf-8", "backslashreplace")
            self._lines.clear()
            self._queue.put(block)

    @property
    def is_file(self) -> bool:
        return self.enabled and self.config.path not in ("stdout", "stderr")

    def reopen(self) -> None:
        """Write what follows to a newly opened file at the configured path (logrotate)."""
        if not self.is_file:
            return
        self.flush()  # lines logged so far still go to the old file
        fd = _open_target(self.config.path)
        if self._writer is not None:
            self._queue.put(fd)  # switched between two blocks
        else:
            old, self._fd = self._fd, fd
            os.close(old)

    def close(self) -> None:
        """Write the waiting lines, wait for the writer thread to finish, take no more."""
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=5)
            self._writer = None
        if self.is_file:
            os.close(self._fd)
        self._fd = -1  # never write to a closed descriptor: its number may be reused
        self.enabled = False

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._writer.start()

    def _write_at_once(self, block: bytes) -> None:
        """`flush: 0`: write on the event loop, unless the target cannot take it now."""
        if self._writer is not None:
            self._queue.put(block)  # the writer thread took over: keep the lines in order
            return
        view = memoryview(block)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                # A full pipe: the event loop must not wait on it. The writer thread takes
                # the rest of this line, and every later one, in order.
                self._start_writer()
                self._queue.put(bytes(view))
                return
            except OSError:
                return  # nowhere to report a broken log target; drop the line
            view = view[written:]

    def _write_loop(self) -> None:
        while (block := self._queue.get()) is not None:
            if isinstance(block, int):
                old, self._fd = self._fd, block
                os.close(old)
                continue
            view = memoryview(block)
            while view:
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    time.sleep(0.01)  # stdout may be a non-blocking pipe; this is the log thread
                    continue
                except OSError:
                    break  # nowhere to report a broken log target; drop the block
                view = view[written:]

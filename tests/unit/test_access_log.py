"""The access log's flush policy, with a real file (or pipe) and the real writer thread.

A line waits in memory at most `access_log.flush` seconds, or until FLUSH_LINES lines
wait; with `flush: 0` it is written before `log` returns; closing and reopening the log
write the waiting lines first. Waits are on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeproxy.config.model import AccessLogConfig
from edgeproxy.http.events import RequestHead
from edgeproxy.logging import FLUSH_LINES, AccessLog
from edgeproxy.logging.formats import Attempt
from tests.conftest import async_wait_until, wait_until

LONG = 3600.0  # a flush interval no test waits for: lines get out some other way


@dataclass
class Record:
    """What a log line is made of (the access log's Request protocol)."""

    path: str
    head: RequestHead = field(init=False)
    client_ip: str = "192.0.2.7"
    client_ip_source: str = "peer"
    peer_ip: str = "192.0.2.7"
    started: float = field(default_factory=time.time)
    request_id: bytes = b"0f" * 16
    upstream_addr: str = ""
    upstream_status: int = 0
    upstream_connect_time: float = -1.0
    upstream_header_time: float = -1.0
    upstream_response_time: float = -1.0
    upstream_earlier: list[Attempt] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.head = RequestHead(b"GET", self.path.encode(), b"1.1", [(b"host", b"t"), *self.headers])
        self.head.host = b"t"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def paths(path: Path) -> list[str]:
    """The request targets logged in `path`, in order (combined format)."""
    return [line.split('"')[1].split()[1] for line in lines(path)]


@pytest.fixture
def access_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "access.log"


@pytest.fixture
def open_logs() -> Iterator[list[AccessLog]]:
    """Logs made by a test; closed afterwards, so no writer thread outlives it."""
    made: list[AccessLog] = []
    yield made
    for log in made:
        log.close()


def access_log(open_logs: list[AccessLog], path: Path | str, flush: float) -> AccessLog:
    log = AccessLog(AccessLogConfig(path=str(path), format="combined", flush=flush))
    open_logs.append(log)
    return log


async def test_a_line_waits_the_configured_interval_then_is_written(access_path, open_logs):
    flush = 0.5
    log = access_log(open_logs, access_path, flush)
    loop = asyncio.get_running_loop()
    started = loop.time()
    log.log(Record("/a"), 200, 2, 2)
    log.log(Record("/b"), 404, 0, 0)
    await async_wait_until(lambda: paths(access_path) == ["/a", "/b"], flush + 3, "both lines")
    # Not before the interval from the config (the loop's timers may round by a millisecond).
    assert loop.time() - started >= flush - 0.01


async def test_a_full_block_is_written_without_waiting_for_the_interval(access_path, open_logs):
    log = access_log(open_logs, access_path, LONG)
    for n in range(FLUSH_LINES):
        log.log(Record(f"/{n}"), 200, 0, 0)
    await async_wait_until(lambda: len(lines(access_path)) == FLUSH_LINES, 5, "a full block")
    assert paths(access_path) == [f"/{n}" for n in range(FLUSH_LINES)]
    log.log(Record("/next"), 200, 0, 0)  # the next line waits for the interval again
    assert len(lines(access_path)) == FLUSH_LINES


def writer_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "access-log"}


async def test_flush_zero_writes_each_line_before_log_returns(access_path, open_logs):
    threads_before = writer_threads()
    log = access_log(open_logs, access_path, 0)
    for n in range(3):
        log.log(Record(f"/{n}"), 200, 0, 0)
        assert paths(access_path) == [f"/{m}" for m in range(n + 1)]  # nothing kept in memory
    assert writer_threads() == threads_before  # written by the caller, not a thread


async def test_close_writes_the_waiting_lines(access_path, open_logs):
    log = access_log(open_logs, access_path, LONG)
    log.log(Record("/a"), 200, 0, 0)
    log.log(Record("/b"), 200, 0, 0)
    assert lines(access_path) == []  # waiting for the (long) interval
    log.close()
    assert paths(access_path) == ["/a", "/b"]  # close waits for the writer thread
    log.log(Record("/late"), 200, 0, 0)  # a closed log takes no more lines, and does not fail
    assert paths(access_path) == ["/a", "/b"]


@pytest.mark.parametrize("flush", [LONG, 0.0])
async def test_reopen_writes_the_waiting_lines_to_the_old_file(tmp_path, open_logs, flush):
    current, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    log = access_log(open_logs, current, flush)
    log.log(Record("/before-1"), 200, 0, 0)
    log.log(Record("/before-2"), 200, 0, 0)
    current.rename(rotated)  # logrotate moves the file, then sends USR1
    log.reopen()
    log.log(Record("/after"), 200, 0, 0)
    log.close()
    assert paths(rotated) == ["/before-1", "/before-2"]
    assert paths(current) == ["/after"]


def test_flush_zero_hands_a_full_pipe_to_the_writer_thread(monkeypatch, open_logs):
    """stdout may be a non-blocking pipe that a slow reader lets fill up: the loop does not
    wait on it; the writer thread writes the rest, and every later line, in order."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    class Stdout:
        def fileno(self) -> int:
            return write_end

    monkeypatch.setattr(sys, "stdout", Stdout())
    threads_before = writer_threads()
    try:
        log = access_log(open_logs, "stdout", 0)
        count = 0
        while writer_threads() == threads_before:  # until a write would block
            assert count < 100_000, "the pipe never filled up"
            log.log(Record(f"/{count}"), 200, 0, 0)
            count += 1
        for n in range(count, count + 10):  # later lines queue behind the rest
            log.log(Record(f"/{n}"), 200, 0, 0)
        received = bytearray()
        expected = count + 10

        os.set_blocking(read_end, False)

        def drained() -> bool:
            with contextlib.suppress(BlockingIOError):  # nothing more yet
                received.extend(os.read(read_end, 1 << 20))
            return received.count(b"\n") >= expected

        wait_until(drained, 10, "every line through the pipe")
        targets = [line.split(b'"')[1].split()[1].decode() for line in received.splitlines()]
        assert targets == [f"/{n}" for n in range(expected)]
    finally:
        for log in open_logs:
            log.close()
        open_logs.clear()
        os.close(read_end)
        os.close(write_end)

"""The access log's flush policy, with a real file (or pipe) and the real writer thread;
then its formats (combined, json, templates), over plain records.

A line waits in memory at most `access_log.flush` seconds, or until FLUSH_LINES lines
wait; with `flush: 0` it is written before `log` returns; closing and reopening the log
write the waiting lines first. Waits are on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeproxy.config import parse_config
from edgeproxy.config.log_format import VARIABLES
from edgeproxy.config.model import AccessLogConfig, LogTemplate
from edgeproxy.http.events import RequestHead
from edgeproxy.logging import FLUSH_LINES, AccessLog
from edgeproxy.logging.formats import (
    Attempt,
    CombinedFormat,
    Formats,
    JsonFormat,
    LineFormat,
    TimeCache,
    variable_readers,
)
from tests.conftest import async_wait_until, wait_until

LONG = 3600.0  # a flush interval no test waits for: lines get out some other way
SERVERS = "servers: [{listen: ['127.0.0.1:0'], locations: [{path: /, return: {status: 200}}]}]\n"


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
        self.head = RequestHead(
            b"GET", self.path.encode(), b"1.1", [(b"host", b"t"), *self.headers]
        )
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


# --- the formats ---


def template(text: str) -> LineFormat:
    config = parse_config(f"access_log: {{format: '{text}'}}\n{SERVERS}", "t.yaml")
    assert isinstance(config.access_log.format, LogTemplate)
    return Formats().line_format(config.access_log.format)


def retried() -> Record:
    """A request whose first peer refused the connection; the second one answered."""
    return Record(
        "/a?b=c",
        upstream_addr="10.0.0.2:80",
        upstream_status=200,
        upstream_connect_time=0.0,
        upstream_header_time=0.0125,
        upstream_response_time=0.02,
        upstream_earlier=[("10.0.0.1:80", 502, -1.0, -1.0, 0.001)],
    )


def test_every_template_variable_has_a_reader() -> None:
    assert set(variable_readers(TimeCache(), 1)) == VARIABLES


def test_a_template_joins_its_variables_and_text() -> None:
    record = Record(
        "/p?q=1",
        client_ip="203.0.113.5",
        client_ip_source="xff",
        peer_ip="192.0.2.9",
        started=1_700_000_000.25,
        headers=[
            (b"authorization", b"Basic " + base64.b64encode(b"alice:secret")),
            (b"x-custom", b"v"),
        ],
    )
    record.head.host = b"Shop.Example:8443"
    line = template(
        "$remote_addr $realip_remote_addr $client_ip_source $remote_user "
        '"$request" $request_method $request_uri $args $query_string $server_protocol '
        "$host $status $body_bytes_sent $bytes_sent $request_time $msec $request_id "
        "$http_x_custom $http_referer"
    )(record, 201, 10, 150, 1_700_000_000.75)
    assert line == (
        "203.0.113.5 192.0.2.9 xff alice "
        '"GET /p?q=1 HTTP/1.1" GET /p?q=1 q=1 q=1 HTTP/1.1 '
        f"shop.example 201 10 150 0.500 1700000000.750 {'0f' * 16} "
        "v -\n"  # a field not sent is "-", as nginx's
    )


def test_the_template_times_are_the_requests_start() -> None:
    started = 1_700_000_000.0
    line = template("$time_local|$time_iso8601")(Record("/", started=started), 200, 0, 0, 0.0)
    local, iso = line.rstrip("\n").split("|")
    assert local == time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(started))
    offset = time.strftime("%z", time.localtime(started))
    assert iso == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)) + (
        f"{offset[:3]}:{offset[3:]}"
    )


def test_a_template_lists_every_peer_tried_as_nginx() -> None:
    line = template(
        "$upstream_addr|$upstream_status|$upstream_connect_time|$upstream_header_time|"
        "$upstream_response_time"
    )(retried(), 200, 0, 0, time.time())
    assert line == "10.0.0.1:80, 10.0.0.2:80|502, 200|-, 0.000|-, 0.013|0.001, 0.020\n"


def test_a_template_shows_no_upstream_as_a_dash() -> None:
    line = template("$upstream_addr $upstream_status $upstream_response_time $remote_user")(
        Record("/"), 200, 0, 0, time.time()
    )
    assert line == "- - - -\n"


def json_record(record: Record, status: int = 200, body: int = 2, sent: int = 120) -> dict:
    return json.loads(Formats().json(record, status, body, sent, record.started + 0.5))


def test_json_records_the_upstream_the_id_and_the_source() -> None:
    record = json_record(
        Record(
            "/",
            client_ip_source="proxy_protocol",
            upstream_addr="10.0.0.2:80",
            upstream_status=200,
            upstream_connect_time=0.001,
            upstream_header_time=0.002,
            upstream_response_time=0.003,
        )
    )
    assert record["request_id"] == "0f" * 16
    assert record["client_ip_source"] == "proxy_protocol"
    assert (record["body_bytes_sent"], record["bytes_sent"]) == (2, 120)
    assert record["request_time"] == 0.5
    assert (record["upstream_addr"], record["upstream_status"]) == ("10.0.0.2:80", 200)
    assert (
        record["upstream_connect_time"],
        record["upstream_header_time"],
        record["upstream_response_time"],
    ) == (0.001, 0.002, 0.003)
    assert "upstream_tries" not in record  # one attempt: nothing more to say


def test_json_lists_the_attempts_only_when_several_were_made() -> None:
    record = json_record(retried())
    assert (record["upstream_addr"], record["upstream_status"]) == ("10.0.0.2:80", 200)
    assert record["upstream_tries"] == [
        {"addr": "10.0.0.1:80", "status": 502, "connect_time": None, "header_time": None,
         "response_time": 0.001},
        {"addr": "10.0.0.2:80", "status": 200, "connect_time": 0.0, "header_time": 0.0125,
         "response_time": 0.02},
    ]  # fmt: skip


def test_json_without_an_upstream_has_nulls() -> None:
    record = json_record(Record("/"))
    assert record["upstream_addr"] is record["upstream_status"] is None
    assert record["upstream_connect_time"] is record["upstream_response_time"] is None


@pytest.mark.parametrize(
    ("log_format", "measured"),
    [
        ("combined", False),
        ("json", True),
        ("off", False),
        ("'$status $upstream_addr'", False),  # no time of the upstream's: no clock read
        ("'$status $upstream_header_time'", True),
    ],
)
def test_upstream_times_are_measured_only_for_a_log_that_shows_them(
    log_format: str, measured: bool, open_logs: list[AccessLog]
) -> None:
    config = parse_config(f"access_log: {{format: {log_format}, path: /dev/null}}\n{SERVERS}", "t")
    log = AccessLog(config.access_log)
    open_logs.append(log)
    assert log.times_upstream is measured


def test_json_escapes_what_the_client_sent() -> None:
    """Written as text, not through json.dumps: the client's bytes are escaped all the same."""
    tricky = b'/a"b\\c\x01\xe9\n'
    record = Record("/", headers=[(b"user-agent", tricky), (b"referer", b"</script>")])
    record.head.target = tricky
    line = Formats().json(record, 200, 0, 0, record.started)
    assert line.endswith("}\n") and line.count("\n") == 1 and line.isascii()
    parsed = json.loads(line)
    assert parsed["target"] == parsed["user_agent"] == tricky.decode("latin-1")
    assert parsed["referer"] == "</script>"


def golden_record() -> Record:
    return Record(
        "/p?q=1",
        started=1_700_000_000.25,
        client_ip="203.0.113.5",
        client_ip_source="xff",
        headers=[(b"user-agent", b'curl "7"\\x'), (b"referer", b"http://r/\xe9")],
        upstream_addr="10.0.0.2:80",
        upstream_status=200,
        upstream_connect_time=0.0,
        upstream_header_time=0.0125,
        upstream_response_time=0.0131,
        upstream_earlier=[("10.0.0.1:80", 502, -1.0, -1.0, 0.001)],
    )


def test_the_named_formats_write_the_same_bytes_as_before() -> None:
    """The lines the formats wrote before they were rewritten for the compiled build (as
    Python f-strings, json's times with :.6f), byte for byte."""
    record = golden_record()
    times = TimeCache()
    started = times.local(record.started)  # the machine's time zone
    now = 1_700_000_000.7504
    assert CombinedFormat(times)(record, 200, 2, 120, now) == (
        f'203.0.113.5 - - [{started}] "GET /p?q=1 HTTP/1.1" 200 2 "http://r/\xe9" "curl "7"\\x"\n'
    )
    assert JsonFormat(times, 4242)(record, 200, 2, 120, now) == (
        f'{{"time":"{started}","pid":4242,"request_id":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",'
        '"client_ip":"203.0.113.5","client_ip_source":"xff","method":"GET","target":"/p?q=1",'
        '"protocol":"HTTP/1.1","status":200,"body_bytes_sent":2,"bytes_sent":120,'
        '"request_time":0.500400,"upstream_addr":"10.0.0.2:80","upstream_status":200,'
        '"upstream_connect_time":0.000000,"upstream_header_time":0.012500,'
        '"upstream_response_time":0.013100,"host":"t","referer":"http://r/\\u00e9",'
        '"user_agent":"curl \\"7\\"\\\\x","upstream_tries":[{"addr":"10.0.0.1:80",'
        '"status":502,"connect_time":null,"header_time":null,"response_time":0.001000},'
        '{"addr":"10.0.0.2:80","status":200,"connect_time":0.000000,"header_time":0.012500,'
        '"response_time":0.013100}]}\n'
    )


def test_json_remembers_no_field_of_the_previous_line() -> None:
    """json keeps the last host, client and peer's JSON text: each line still has its own."""
    json_format = JsonFormat(TimeCache(), 1)
    seen = []
    for client, peer, host in [("192.0.2.1", "10.0.0.1:80", b"a"), ("192.0.2.2", "", b"b"),
                               ("".join(["192.0.2.", "1"]), "10.0.0.1:80", b"")]:  # fmt: skip
        record = Record("/", client_ip=client, upstream_addr=peer, upstream_status=200)
        record.head.host = host
        line = json.loads(json_format(record, 200, 0, 0, record.started))
        seen.append((line["client_ip"], line["upstream_addr"], line["host"]))
    assert seen == [
        ("192.0.2.1", "10.0.0.1:80", "a"),
        ("192.0.2.2", None, "b"),
        ("192.0.2.1", "10.0.0.1:80", "-"),
    ]

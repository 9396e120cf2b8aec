"""The access log on a worker's graceful stop and on USR1: waiting lines are written first.

The flush interval is set far beyond the test's length, so a line can only reach the file
through the stop or the reopen. (The YAML key `access_log.flush` is the loader's; here the
parsed config is given the interval directly.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeproxy.config import parse_config
from edgeproxy.server.listeners import bind
from edgeproxy.server.worker import Worker
from tests.integration.fake_upstreams import proxy_yaml
from tests.integration.raw_http import Client, RecordingUpstream, get

LONG = 3600.0


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    recorder = await RecordingUpstream().start()
    yield recorder
    recorder.close()


async def start_worker(tmp_path: Path, upstream: RecordingUpstream) -> tuple[Worker, int]:
    config = parse_config(proxy_yaml([upstream.address]).replace("{temp}", str(tmp_path)), "t")
    access_log = dataclasses.replace(
        config.access_log, path=str(tmp_path / "access.log"), format="combined", flush=LONG
    )
    config = dataclasses.replace(config, access_log=access_log)
    address = config.servers[0].listen[0]
    sock = bind(address)
    worker = Worker(config)
    await worker.start({address: sock})
    return worker, sock.getsockname()[1]


def logged_paths(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [line.split('"')[1].split()[1] for line in text.splitlines()]


async def request(port: int, path: str) -> None:
    client = await Client.connect(port)
    try:
        assert (await client.exchange(get(path))).status == 200
    finally:
        client.close()


async def test_a_graceful_stop_writes_the_waiting_lines(tmp_path, upstream):
    worker, port = await start_worker(tmp_path, upstream)
    stopped = False
    try:
        for n in range(3):
            await request(port, f"/{n}")
        assert logged_paths(tmp_path / "access.log") == []  # waiting for the interval
        await worker.stop(timeout=5)
        stopped = True
        assert logged_paths(tmp_path / "access.log") == ["/0", "/1", "/2"]
    finally:
        if not stopped:
            await worker.stop(timeout=0)


async def test_a_reopen_writes_the_waiting_lines_to_the_old_file(tmp_path, upstream):
    worker, port = await start_worker(tmp_path, upstream)
    try:
        await request(port, "/before")
        (tmp_path / "access.log").rename(tmp_path / "access.log.1")  # logrotate, then USR1
        worker.reopen_logs()  # what the worker's USR1 handler calls
        await request(port, "/after")
    finally:
        await worker.stop(timeout=5)
    assert logged_paths(tmp_path / "access.log.1") == ["/before"]
    assert logged_paths(tmp_path / "access.log") == ["/after"]

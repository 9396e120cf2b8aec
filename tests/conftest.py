"""Shared fixtures: real gunicorn upstreams, an in-process edgeproxy worker, deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

from edgeproxy.config import Address, Config, parse_config
from edgeproxy.http.codec import CODECS
from edgeproxy.server.listeners import bind
from edgeproxy.server.worker import Worker

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """`make test` runs the suite twice, pure and compiled (setup.py): make sure the
    compiled run really exercises the compiled modules, in process and through the CLI."""
    if os.environ.get("EDGEPROXY_EXPECT_COMPILED") != "1":
        return
    from edgeproxy import build_kind

    cli = subprocess.run(
        [sys.executable, "-m", "edgeproxy", "--version"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    if build_kind() != "compiled" or "(compiled)" not in cli.stdout:
        raise pytest.UsageError(f"expected the compiled build, got: {cli.stdout.strip()}")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    # The product runs on uvloop; so do the tests.
    return {"uvloop": uvloop.new_event_loop}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


async def async_wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `edgeproxy` command in a subprocess, run to its end (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "edgeproxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_connect(address: str) -> bool:
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(address[5:])
        else:
            host, port = address.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class Gunicorn:
    address: str  # "127.0.0.1:PORT" or "unix:/path"
    process: subprocess.Popen[bytes]
    name: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_gunicorn(
    name: str, *, unix_path: str | None = None, workers: int = 1, timeout: int = 30
) -> Gunicorn:
    address = f"unix:{unix_path}" if unix_path else f"127.0.0.1:{free_port()}"
    env = dict(os.environ, APP_NAME=name, PYTHONPATH=str(APPS))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "sync",
            "-b", address, "--timeout", str(timeout), "--graceful-timeout", "2",
            "--log-level", "warning", "wsgi_app:app",
        ],
        env=env,
        cwd=str(APPS),
    )  # fmt: skip
    upstream = Gunicorn(address, process, name)
    try:
        wait_until(lambda: process.poll() is None and can_connect(address), 20, f"gunicorn {name}")
    except BaseException:
        upstream.stop()
        raise
    return upstream


@pytest.fixture(scope="session")
def gunicorn_a() -> Iterator[Gunicorn]:
    upstream = start_gunicorn("a", workers=2)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def gunicorn_b() -> Iterator[Gunicorn]:
    upstream = start_gunicorn("b", workers=2)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def gunicorn_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    path = tmp_path_factory.mktemp("sock") / "app.sock"
    upstream = start_gunicorn("unix", unix_path=str(path), workers=2)
    yield upstream
    upstream.stop()


@dataclass
class Proxy:
    worker: Worker
    config: Config
    port: int
    temp_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(params=sorted(CODECS))
def http_parser(request: pytest.FixtureRequest) -> str:
    """Every protocol and integration test runs once per codec."""
    return str(request.param)


@pytest.fixture
async def start_proxy(tmp_path: Path, http_parser: str) -> AsyncIterator[Callable[..., object]]:
    """Start an in-process worker from YAML text; `{temp}` is replaced by a temp dir.

    The YAML's servers listen on 127.0.0.1:0; the first server's socket is the one returned.
    `http_parser` is set to the codec under test unless the YAML sets it.
    """
    workers: list[Worker] = []

    async def start(yaml_text: str) -> Proxy:
        temp = tmp_path / f"spool{len(workers)}"
        temp.mkdir()
        if "http_parser:" not in yaml_text:
            yaml_text = f"http_parser: {http_parser}\n{yaml_text}"
        config = parse_config(yaml_text.replace("{temp}", str(temp)), "test.yaml")
        sockets = {}
        for server in config.servers:
            for address in server.listen:
                if address not in sockets:
                    sockets[address] = bind(address)
        worker = Worker(config)
        await worker.start(sockets)
        workers.append(worker)
        first: Address = config.servers[0].listen[0]
        port = sockets[first].getsockname()[1] if first.kind == "tcp" else 0
        return Proxy(worker, config, port, temp)

    yield start
    for worker in workers:
        await worker.stop(timeout=0)

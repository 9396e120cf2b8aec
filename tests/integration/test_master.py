"""The master and its workers, driven through the real CLI in a subprocess, in front of
real gunicorn: spreading, replacing, resizing, reloading, stopping, reopening logs."""

from __future__ import annotations

import collections
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx
import pytest

from tests.conftest import Gunicorn, can_connect, free_port, run_cli, wait_until
from tests.integration.cli_proxy import CliProxy, children

READY = re.compile(r"worker (\d+) ready")


def response_body(raw: bytes, status: int) -> bytes:
    """The body of one complete raw response (whatever its framing), checking its status."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            assert event.status_code == status
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body
        else:
            raise AssertionError(f"incomplete response: {raw!r}")


def accepted(proxy_port: int, client: socket.socket) -> bool:
    """Whether a worker has accept()ed `client`'s connection (it has an inode then)."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            if (
                int(local.split(":")[1], 16) == proxy_port
                and int(remote.split(":")[1], 16) == client_port
            ):
                return inode != "0"
    return False


@dataclass
class Edge(CliProxy):
    """The CLI in front of one upstream, with a config of its own shape: N workers, a pid
    file, both logs and a /healthz location."""

    upstream: str
    extra_ports: list[int] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.dir / "edgeproxy.pid"

    def write_config(
        self,
        *,
        workers: int = 2,
        top: str = "",
        locations: str = "",
        servers: str = "",
        upstream: str = "",
    ) -> None:
        self.config.write_text(
            f"""workers: {workers}
pid_file: {self.pid_file}
error_log: {{path: {self.error_log}, level: info}}
access_log: {{path: {self.access_log}, format: json}}
temp_path: {self.dir}
{top}
upstreams:
  app: {upstream or f'{{servers: ["{self.upstream}"]}}'}
servers:
  - listen: ["127.0.0.1:{self.port}"]
    locations:
      - {{exact: /healthz, return: {{status: 200, body: "ok\\n"}}}}
{locations}
      - {{path: /, proxy_pass: app}}
{servers}"""
        )

    def start(self, workers: int = 2, **config: str) -> Edge:
        self.write_config(workers=workers, **config)
        self.launch()
        self.wait_workers(workers)
        return self

    def workers(self) -> set[int]:
        return children(self.pid)

    def ready_workers(self) -> set[int]:
        return self.workers() & {int(pid) for pid in READY.findall(self.errors())}

    def wait_workers(
        self, count: int, exclude: set[int] | None = None, timeout: float = 15
    ) -> set[int]:
        """Wait until exactly `count` workers serve, none of them in `exclude`; their pids."""
        exclude = exclude or set()

        def settled() -> bool:
            assert self.running(), self.errors()
            workers = self.workers()
            return (
                len(workers) == count and not workers & exclude and workers == self.ready_workers()
            )

        wait_until(settled, timeout, f"{count} workers")
        return self.workers()

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 15) -> None:
        wait_until(lambda: len(re.findall(pattern, self.errors())) >= count, timeout, pattern)

    def access_pids(self) -> collections.Counter[int]:
        return collections.Counter(record["pid"] for record in self.access_records())


@pytest.fixture
def edge(tmp_path: Path, gunicorn_a: Gunicorn) -> Iterator[Edge]:
    proxy = Edge(tmp_path, free_port(), gunicorn_a.address)
    yield proxy
    proxy.stop()


@dataclass
class Answer:
    status_code: int
    text: str


def get(url: str, path: str = "/", timeout: float = 10) -> Answer:
    """One request on a new connection, raw: an httpx client per call would cost more to
    create than the request it makes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())  # no chunks
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return Answer(int(head.split(b" ", 2)[1]), body.decode("latin-1"))


def test_two_workers_share_the_load_and_the_master_serves_nothing(edge: Edge) -> None:
    edge.start(workers=2)
    workers = edge.workers()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: get(edge.url, "/healthz").status_code, range(200)))
    assert statuses == [200] * 200
    wait_until(lambda: sum(edge.access_pids().values()) == 200, 10, "200 access log lines")
    per_pid = edge.access_pids()
    assert set(per_pid) == workers and edge.pid not in per_pid
    assert max(per_pid.values()) <= 0.65 * 200, per_pid


def test_a_killed_worker_is_replaced_and_requests_keep_succeeding(edge: Edge) -> None:
    edge.start(workers=2)
    victim, survivor = sorted(edge.workers())
    os.kill(victim, signal.SIGKILL)
    # Sent before the replacement is up: those hashed to the victim's socket wait in its
    # queue (the master holds it open) until the new worker of that slot accepts them.
    for _ in range(20):
        assert get(edge.url).text == "hello from a\n"
    workers = edge.wait_workers(2, exclude={victim})
    assert survivor in workers
    assert f"worker {victim} died (killed by SIGKILL); starting a new one" in edge.errors()


def test_ttin_and_ttou_add_and_remove_a_worker(edge: Edge) -> None:
    edge.start(workers=2)
    before = edge.workers()
    edge.signal(signal.SIGTTIN)
    three = edge.wait_workers(3)
    assert before < three
    edge.signal(signal.SIGTTOU)
    two = edge.wait_workers(2)
    assert two < three
    for _ in range(10):
        assert get(edge.url).status_code == 200


def test_hup_applies_a_new_location_and_a_new_listen_address(edge: Edge) -> None:
    edge.start(workers=2)
    old = edge.workers()
    assert get(edge.url, "/new").text == "hello from a\n"  # not a location yet
    new_port = free_port()
    edge.write_config(
        locations='      - {exact: /new, return: {status: 200, body: "new\\n"}}',
        servers=f"""  - listen: ["127.0.0.1:{new_port}"]
    locations: [{{path: /, return: {{status: 200, body: "second\\n"}}}}]
""",
    )
    edge.signal(signal.SIGHUP)
    edge.wait_log("reloaded: generation 2")
    edge.wait_workers(2, exclude=old)
    assert get(edge.url, "/new").text == "new\n"
    assert get(f"http://127.0.0.1:{new_port}").text == "second\n"
    edge.write_config()  # and the address goes away again
    edge.signal(signal.SIGHUP)
    edge.wait_log("reloaded: generation 3")
    wait_until(lambda: not can_connect(f"127.0.0.1:{new_port}"), 10, "the port to close")
    assert get(edge.url, "/new").text == "hello from a\n"


def test_hup_with_a_broken_config_changes_nothing(edge: Edge) -> None:
    edge.start(workers=2)
    workers = edge.workers()
    edge.write_config(top="worker_shutdown_timeout: soon")
    edge.signal(signal.SIGHUP)
    edge.wait_log("reload failed")
    assert re.search(
        rf"reload failed, still running the previous configuration: {edge.config}:\d+: "
        r"worker_shutdown_timeout: ",
        edge.errors(),
    )
    assert edge.workers() == workers
    assert get(edge.url, "/healthz").text == "ok\n"


def test_a_reload_with_several_errors_reports_each_and_keeps_serving(edge: Edge) -> None:
    edge.start(workers=1)
    workers = edge.workers()
    edge.write_config(
        workers=1,
        top="worker_shutdown_timeout: soon\nworkerz: 3",
        locations="      - {path: /x, proxy_pass: ap}",
    )
    lines = edge.config.read_text().splitlines()

    def at(start: str) -> str:
        return f"{edge.config}:{next(i for i, t in enumerate(lines, 1) if t.startswith(start))}"

    problems = [
        f"{at('worker_shutdown_timeout')}: worker_shutdown_timeout: "
        "expected a duration like 250ms, 30s, 5m or 1h, got 'soon'",
        f"{at('workerz')}: workerz: unknown key; did you mean 'workers'?",
        f"{at('      - {path: /x')}: servers[0].locations[1].proxy_pass: no upstream named 'ap'",
    ]
    # `-s reload` checks the file first: it prints every error and sends nothing
    result = run_cli("-s", "reload", "-c", str(edge.config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        *(f"edgeproxy: {problem}" for problem in problems),
        f"edgeproxy: {edge.config} is invalid; no signal sent",
    ]
    # a HUP reaches the master, which checks the file too: every error in the error log
    edge.signal(signal.SIGHUP)
    edge.wait_log("reload failed", count=len(problems))
    logged = [line for line in edge.errors().splitlines() if "reload failed" in line]
    assert [line.split("still running the previous configuration: ", 1)[1] for line in logged] == (
        problems
    )
    assert edge.workers() == workers
    assert get(edge.url, "/healthz").text == "ok\n"


def test_no_request_fails_through_five_reloads_under_load(edge: Edge) -> None:
    edge.start(workers=2)
    stop = threading.Event()
    failures: list[str] = []
    done = collections.Counter[str]()

    def load(keep_alive: bool) -> None:
        headers = {} if keep_alive else {"Connection": "close"}
        with httpx.Client(base_url=edge.url, timeout=10, headers=headers) as client:
            while not stop.is_set():
                for path in ("/", "/healthz"):
                    try:
                        response = client.get(path)
                    except httpx.HTTPError as exc:
                        failures.append(f"{path}: {exc!r}")
                        continue
                    if response.status_code != 200:
                        failures.append(f"{path}: {response.status_code}")
                    done[path] += 1

    threads = [threading.Thread(target=load, args=(k,)) for k in (True, True, False, False)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(done.values()) > 50, 10, "the load to run")
        before = sum(done.values())
        for generation in range(2, 7):
            edge.signal(signal.SIGHUP)
            edge.wait_log(f"reloaded: generation {generation}")
        edge.wait_workers(2)  # the old ones have all finished
        during = sum(done.values()) - before
        wait_until(lambda: sum(done.values()) > before + during + 50, 10, "load after")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert failures == [], (failures[:5], len(failures), done)
    assert during > 100  # the reloads really happened under load
    assert "died" not in edge.errors() and "killing" not in edge.errors()


def test_quit_lets_a_slow_request_finish_then_exits_0(edge: Edge) -> None:
    edge.start(workers=2)
    with socket.create_connection(("127.0.0.1", edge.port)) as client:
        client.sendall(b"GET /sleep/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: accepted(edge.port, client), 5, "the request to be accepted")
        sent_quit = time.monotonic()
        edge.signal(signal.SIGQUIT)
        client.settimeout(10)
        response = b""
        while chunk := client.recv(65536):
            response += chunk
        answered = time.monotonic()
    assert response_body(response, 200) == b"slept"
    assert edge.process is not None
    assert edge.process.wait(15) == 0
    assert answered - sent_quit > 1.0  # it really was in flight when QUIT came
    assert not edge.pid_file.exists()


def test_usr1_reopens_the_log_files(edge: Edge) -> None:
    edge.start(workers=2)
    assert get(edge.url, "/healthz").status_code == 200
    wait_until(lambda: sum(edge.access_pids().values()) == 1, 10, "the first line")
    rotated_access = edge.dir / "access.log.1"
    rotated_error = edge.dir / "error.log.1"
    edge.access_log.rename(rotated_access)
    edge.error_log.rename(rotated_error)
    result = run_cli("-s", "reopen", "-c", str(edge.config))
    assert result.returncode == 0, result.stderr
    edge.wait_log("log files reopened", count=3)  # the master and both workers
    assert get(edge.url, "/healthz").status_code == 200
    wait_until(lambda: sum(edge.access_pids().values()) == 1, 10, "a line in the new file")
    assert len(rotated_access.read_text().splitlines()) == 1
    assert "log files reopened" not in rotated_error.read_text()


def test_signals_through_the_pid_file(edge: Edge) -> None:
    edge.start(workers=1)
    assert edge.pid_file.read_text().strip() == str(edge.pid)
    edge.write_config(workers=1, locations="      - {exact: /v2, return: {status: 204}}")
    result = run_cli("-s", "reload", "-c", str(edge.config))
    assert result.returncode == 0, result.stderr
    edge.wait_log("reloaded: generation 2")
    assert get(edge.url, "/v2").status_code == 204
    assert run_cli("-s", "quit", "-c", str(edge.config)).returncode == 0
    assert edge.process is not None and edge.process.wait(15) == 0
    assert not edge.pid_file.exists()
    result = run_cli("-s", "stop", "-c", str(edge.config))
    assert result.returncode == 1
    assert f"no pid file {edge.pid_file}: is edgeproxy running?" in result.stderr
    gone = subprocess.Popen(["true"])
    gone.wait()
    edge.pid_file.write_text(f"{gone.pid}\n")
    result = run_cli("-s", "reload", "-c", str(edge.config))
    assert result.returncode == 1
    assert f"pid file {edge.pid_file} is stale" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_with_a_blocked_loop_is_killed_and_replaced(edge: Edge) -> None:
    edge.start(workers=2, top="worker_heartbeat_timeout: 1s")
    frozen = min(edge.workers())
    os.kill(frozen, signal.SIGSTOP)  # from the master's side, the same as a blocked loop
    edge.wait_workers(2, exclude={frozen})
    assert re.search(rf"worker {frozen}: no heartbeat for [\d.]+s \(its event loop is blocked\)",
                     edge.errors())  # fmt: skip
    assert get(edge.url).status_code == 200


def test_a_peer_failed_in_one_worker_is_avoided_by_all_and_across_a_reload(edge: Edge) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused
    # fail_timeout well above the test's run time: the one marking must be the only one.
    upstream = (
        f'{{servers: [{{address: "{dead}", fail_timeout: 5m}}, "{edge.upstream}"], '
        "next_upstream: [error]}"
    )
    edge.start(workers=2, upstream=upstream)

    def spread(count: int) -> None:
        for _ in range(count):
            assert get(edge.url).text == "hello from a\n"

    spread(40)
    wait_until(lambda: sum(edge.access_pids().values()) == 40, 10, "40 access log lines")
    assert len(edge.access_pids()) == 2  # both workers served
    assert edge.errors().count(f"peer {dead} marked unavailable") == 1
    old = edge.workers()
    edge.write_config(upstream=upstream, locations="      - {exact: /v2, return: {status: 204}}")
    edge.signal(signal.SIGHUP)
    edge.wait_log("reloaded: generation 2")
    edge.wait_workers(2, exclude=old)
    spread(40)
    assert edge.errors().count(f"peer {dead} marked unavailable") == 1  # kept, not reset


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory the workers' user can reach (pytest's tmp_path is root's alone), and
    create files in, as in /tmp: it is also their temp_path, which start-up checks."""
    path = Path(tempfile.mkdtemp())
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path)


@root_only
def test_workers_run_as_the_configured_user(world_readable_dir: Path, gunicorn_a: Gunicorn) -> None:
    nobody = pwd.getpwnam("nobody")
    edge = Edge(world_readable_dir, free_port(), gunicorn_a.address)
    try:
        edge.start(workers=1, top="user: nobody")
        (worker,) = edge.workers()
        with open(f"/proc/{worker}/status") as fh:
            uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(nobody.pw_uid)}
        assert os.stat(f"/proc/{edge.pid}").st_uid == 0  # the master stays root, to bind
        assert get(edge.url).text == "hello from a\n"
        assert os.stat(edge.access_log).st_uid == nobody.pw_uid
    finally:
        edge.stop()


@root_only
def test_workers_that_keep_failing_to_start_stop_the_master(
    tmp_path: Path, world_readable_dir: Path
) -> None:
    # The access log in a directory the workers' user cannot enter: every worker fails.
    edge = Edge(world_readable_dir, free_port(), "127.0.0.1:1")
    edge.write_config(top="user: nobody")
    text = edge.config.read_text().replace(f"path: {edge.access_log}", f"path: {tmp_path}/a.log")
    edge.config.write_text(text)
    started = time.monotonic()
    result = run_cli("-c", str(edge.config))
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    log = edge.errors()
    assert "worker failed to start: [Errno 13] Permission denied" in log
    assert "workers keep failing to start (5 in a row" in log
    assert result.stderr.count("workers keep failing to start") == 1

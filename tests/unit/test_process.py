"""The master's pure parts: signal table, boot policy, shared tables, pid file, sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from edgeproxy.config import Address, Config, PeerConfig, parse_config
from edgeproxy.errors import ConfigError
from edgeproxy.process.master import SIGNAL_HANDLERS, Master
from edgeproxy.process.pidfile import (
    PidFileError,
    is_edgeproxy,
    read_pid_file,
    remove_pid_file,
    running_master,
    write_pid_file,
)
from edgeproxy.process.shared import SharedState
from edgeproxy.process.sockets import ListenSet
from edgeproxy.process.workers import BootGuard, describe_status
from edgeproxy.upstream.peer import Peer


def config(upstreams: str) -> Config:
    return parse_config(
        f"upstreams:\n{upstreams}servers:\n  - listen: ['127.0.0.1:0']\n"
        "    locations: [{path: /, return: {status: 200}}]\n",
        "t.yaml",
    )


# --- signals ---


def test_every_signal_has_its_handler_method() -> None:
    for sig, name in SIGNAL_HANDLERS.items():
        assert name == f"handle_{sig.name[3:].lower()}"
        assert callable(getattr(Master, name))
    nginx = {"SIGHUP", "SIGQUIT", "SIGTERM", "SIGINT", "SIGUSR1", "SIGTTIN", "SIGTTOU"}
    assert nginx <= {sig.name for sig in SIGNAL_HANDLERS}


def test_exit_statuses_are_described() -> None:
    assert describe_status(3 << 8) == "exit code 3"
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL"


# --- boot failures ---


def test_boot_failures_back_off_then_give_up() -> None:
    guard = BootGuard(limit=5, first_delay=0.1, max_delay=0.5)
    assert [guard.failed() for _ in range(4)] == [0.1, 0.2, 0.4, 0.5]
    assert guard.failed() is None


def test_a_worker_that_boots_resets_the_count() -> None:
    guard = BootGuard(limit=3)
    guard.failed()
    guard.failed()
    guard.booted()
    assert guard.failed() is not None
    assert guard.failed() is not None
    assert guard.failed() is None


# --- the shared worker table ---


def test_worker_rows_carry_heartbeat_and_readiness_and_are_cleared_for_reuse() -> None:
    table = SharedState(worker_rows=2, peer_rows=1).workers
    first, second = table.allocate(), table.allocate()
    assert (first, second) == (0, 1)
    assert table.allocate() is None
    assert table.heartbeat(0) == 0.0 and not table.ready(0)
    table.beat(0, 1234)
    table.set_ready(0)
    assert table.heartbeat(0) > 0 and table.ready(0)
    table.release(0)
    assert table.allocate() == 0
    assert table.heartbeat(0) == 0.0 and not table.ready(0)


def test_the_tables_are_shared_with_a_forked_child() -> None:
    shared = SharedState(worker_rows=1, peer_rows=1)
    row = shared.workers.allocate()
    assert row is not None
    pid = os.fork()
    if pid == 0:
        shared.workers.set_ready(row)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shared.workers.ready(row)


# --- the shared peer table ---

TWO_PEERS = "  app: {servers: ['127.0.0.1:8001', '127.0.0.1:8002']}\n"
A = Address("tcp", "127.0.0.1", 8001)
B = Address("tcp", "127.0.0.1", 8002)


def test_peers_of_two_workers_share_failure_state() -> None:
    table = SharedState(worker_rows=1, peer_rows=4).peers
    table.assign(config(TWO_PEERS))
    in_one = Peer(PeerConfig(A, max_fails=2), 0, table.view("app", A))
    in_other = Peer(PeerConfig(A, max_fails=2), 0, table.view("app", A))
    assert not in_one.record_failure(100.0)
    assert in_other.record_failure(101.0)  # the second failure, counted across workers
    assert not in_one.available(105.0) and in_one.available(112.0)
    other_peer = Peer(PeerConfig(B), 1, table.view("app", B))
    assert other_peer.available(105.0)


def test_a_reload_keeps_the_state_of_kept_peers_and_frees_removed_ones_later() -> None:
    table = SharedState(worker_rows=1, peer_rows=2).peers
    old = config(TWO_PEERS)
    table.assign(old)
    Peer(PeerConfig(A), 0, table.view("app", A)).record_failure(100.0)
    new = config("  app: {servers: ['127.0.0.1:8001']}\n  api: {servers: ['127.0.0.1:9']}\n")
    table.assign(new)
    # The table is full (B is still named by the old workers): `api` gets no shared row yet.
    assert table.view("api", Address("tcp", "127.0.0.1", 9)) is None
    kept = Peer(PeerConfig(A), 0, table.view("app", A))
    assert not kept.available(105.0)  # not reset by the reload
    table.retain([old, new])  # old workers still run: B is kept
    assert table.view("app", B) is not None
    table.retain([new])  # they are gone: B's row is cleared and free again
    assert table.view("app", B) is None and len(table) == 1
    table.assign(new)
    assert table.view("api", Address("tcp", "127.0.0.1", 9)) is not None


def test_the_same_address_in_two_upstreams_has_two_rows() -> None:
    table = SharedState(worker_rows=1, peer_rows=4).peers
    table.assign(config(TWO_PEERS + "  other: {servers: ['127.0.0.1:8001']}\n"))
    Peer(PeerConfig(A), 0, table.view("app", A)).record_failure(100.0)
    assert Peer(PeerConfig(A), 0, table.view("other", A)).available(101.0)


# --- pid file ---


def test_pid_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = str(tmp_path / "edgeproxy.pid")
    with pytest.raises(PidFileError, match=r"no pid file .*: is edgeproxy running"):
        read_pid_file(path)
    write_pid_file(path, 4242)
    assert read_pid_file(path) == 4242
    remove_pid_file(path, 1234)  # not ours: left alone
    assert read_pid_file(path) == 4242
    remove_pid_file(path, 4242)
    assert not os.path.exists(path)
    Path(path).write_text("garbage\n")
    with pytest.raises(PidFileError, match="does not hold a pid"):
        read_pid_file(path)


def test_a_stale_pid_file_is_reported(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    path = str(tmp_path / "edgeproxy.pid")
    write_pid_file(path, gone.pid)
    assert not is_edgeproxy(gone.pid)
    with pytest.raises(PidFileError, match="stale"):
        running_master(path)


# --- listening sockets ---


def test_each_slot_gets_its_own_socket_on_the_same_port() -> None:
    listeners = ListenSet(slots=2)
    address = Address("tcp", "127.0.0.1", 0)
    try:
        assert listeners.open([address]) == [address]
        first = listeners.sockets_for([address], 0)[address]
        second = listeners.sockets_for([address], 1)[address]
        assert first is not second
        assert first.getsockname() == second.getsockname()
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        listeners.resize(3)
        assert listeners.sockets_for([address], 2)[address].getsockname() == first.getsockname()
        listeners.resize(1)
        assert second.fileno() == -1  # closed
    finally:
        listeners.close_all()


def test_a_port_in_use_is_refused_even_by_another_reuseport_group() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        listeners = ListenSet(slots=2)
        with pytest.raises(ConfigError, match=f"cannot bind 127.0.0.1:{port}"):
            listeners.open([Address("tcp", "127.0.0.1", port)])
        assert listeners.addresses == []


def test_unix_sockets_are_shared_and_unlinked_when_closed(tmp_path: Path) -> None:
    address = Address("unix", path=str(tmp_path / "s.sock"))
    listeners = ListenSet(slots=2)
    listeners.open([address])
    assert listeners.sockets_for([address], 0) == listeners.sockets_for([address], 1)
    listeners.close([address])
    assert not os.path.exists(address.path)


# --- config keys ---


SERVERS = (
    "servers:\n  - listen: ['127.0.0.1:8080']\n    locations: [{path: /, return: {status: 200}}]\n"
)


def test_process_keys_have_defaults_and_are_checked() -> None:
    parsed = parse_config(SERVERS, "t.yaml")
    assert parsed.worker_shutdown_timeout == 30.0 and parsed.user is None
    parsed = parse_config("worker_shutdown_timeout: 5s\nuser: root\n" + SERVERS, "t.yaml")
    assert parsed.worker_shutdown_timeout == 5.0 and parsed.user == "root"
    with pytest.raises(ConfigError, match=r"t.yaml:1: user: no such user 'nosuchuser'"):
        parse_config("user: nosuchuser\n" + SERVERS, "t.yaml")
    with pytest.raises(ConfigError, match=r"t.yaml:1: group: no such group 'nosuchgroup'"):
        parse_config("group: nosuchgroup\n" + SERVERS, "t.yaml")
    with pytest.raises(ConfigError, match=r"t.yaml:1: workers: must be <= 256, got 1000"):
        parse_config("workers: 1000\n" + SERVERS, "t.yaml")

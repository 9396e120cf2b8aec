"""A temp_path that fails: removed while running, not writable by the workers' user, or full
(a size-limited tmpfs made for the test), for request bodies and for response bodies.

Through the real CLI, in front of real gunicorn. A request body that cannot be spooled is
answered 500 (as nginx) with one error-log line naming the directory and the errno, and an
access-log line; a response body that cannot be spooled (its head is already sent) ends
the client connection early, with the same kind of error-log line. `-t` and start-up refuse
a temp_path the workers cannot create files in.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gunicorn, free_port, run_cli, wait_until
from tests.integration.cli_proxy import CliProxy, config_text, start_cli_proxy
from tests.integration.fake_upstreams import proxy_yaml

IS_ROOT = os.geteuid() == 0
BODY = 2 * 1024 * 1024  # over client_body_buffer_size (64k), and over the 1m tmpfs
# More than the kernel's socket buffers can hold between the proxy and a client that reads
# nothing (tcp_wmem's maximum is a few MiB): the proxy's response spool must take the rest.
RESPONSE = 64 * 1024 * 1024
MESSAGES = {
    "removed": "cannot create a temp file in {temp}: No such file or directory (ENOENT)",
    "not writable": "cannot create a temp file in {temp}: Permission denied (EACCES)",
    "full": "cannot write a temp file in {temp}: No space left on device (ENOSPC)",
}


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A directory the workers' user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="edgeproxy-temp-faults-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def small_filesystem(path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at `path`, for the duration; skips where none can be mounted."""
    if not IS_ROOT:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs the suite as root)")
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(path)]
    result = subprocess.run(mount, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def is_empty(filesystem: Path) -> bool:
    """No block of `filesystem` in use: every temp file on it was closed."""
    stats = os.statvfs(filesystem)
    return stats.f_bfree == stats.f_blocks


@contextlib.contextmanager
def proxy_with_fault(fault: str, base: Path, upstream: Gunicorn) -> Iterator[tuple[CliProxy, Path]]:
    """edgeproxy serving with temp_path `base/spool`, which then fails as `fault` says."""
    temp = base / "spool"
    with contextlib.ExitStack() as stack:
        top = ""
        if fault == "full":
            stack.enter_context(small_filesystem(temp))
        else:
            temp.mkdir()
        if fault == "not writable" and IS_ROOT:
            # Root writes anywhere: the workers must run as another user for this fault.
            os.chown(temp, pwd.getpwnam("nobody").pw_uid, -1)
            top = "user: nobody"
        proxy = start_cli_proxy(proxy_yaml([f'"{upstream.address}"']), base, top=top)
        stack.callback(proxy.stop)
        if fault == "removed":
            temp.rmdir()
        elif fault == "not writable":
            if IS_ROOT:
                os.chown(temp, 0, 0)
            os.chmod(temp, 0o700 if IS_ROOT else 0o500)
            stack.callback(os.chmod, temp, 0o755)  # for the clean-up
        yield proxy, temp


@pytest.mark.parametrize("fault", sorted(MESSAGES))
def test_a_request_body_that_cannot_be_spooled_is_answered_500_and_logged(
    fault: str, base_dir: Path, gunicorn_a: Gunicorn
) -> None:
    with proxy_with_fault(fault, base_dir, gunicorn_a) as (proxy, temp):
        url = f"http://127.0.0.1:{proxy.port}"
        with httpx.Client(timeout=20) as client:
            answer = client.post(f"{url}/echo", content=b"x" * BODY)
            assert answer.status_code == 500
            assert answer.headers["connection"] == "close"
            # The worker goes on: a body kept in memory and a plain GET still go through.
            assert client.post(f"{url}/echo", content=b"small").json()["body_length"] == 5
        wait_until(lambda: len(proxy.access_lines()) >= 2, 10, "two access-log lines")
        refused = proxy.access_records()[0]
        assert (refused["status"], refused["method"], refused["target"]) == (500, "POST", "/echo")
        message = MESSAGES[fault].format(temp=temp)
        errors = [line for line in proxy.errors().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1, proxy.errors()
        assert errors[0].endswith(
            f'client 127.0.0.1: 500 request body: {message} ("POST /echo HTTP/1.1")'
        )
        if fault == "full":  # the part that was written is freed with the request
            wait_until(lambda: is_empty(temp), 10, "the temp file closed")


def read_until_closed(sock: socket.socket) -> int:
    """Bytes received until the connection ends (closed or reset)."""
    received = 0
    sock.settimeout(20)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    return received


@pytest.mark.parametrize("fault", sorted(MESSAGES))
def test_a_response_body_that_cannot_be_spooled_ends_the_connection_and_is_logged(
    fault: str, base_dir: Path, gunicorn_a: Gunicorn
) -> None:
    with proxy_with_fault(fault, base_dir, gunicorn_a) as (proxy, temp):
        with socket.socket() as sock:
            # A small receive window that the client never reads from: the proxy must spool.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(f"GET /bytes/{RESPONSE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_until(lambda: "response body:" in proxy.errors(), 30, "the spool failure")
            received = read_until_closed(sock)
        assert received < RESPONSE  # cut short, never silently completed
        message = MESSAGES[fault].format(temp=temp)
        errors = [line for line in proxy.errors().splitlines() if "[ERROR]" in line]
        assert len(errors) == 1, proxy.errors()
        assert errors[0].endswith(
            f'upstream app: {gunicorn_a.address} "GET /bytes/{RESPONSE} HTTP/1.1": response '
            f"body: {message}; closing the client connection"
        )
        wait_until(lambda: len(proxy.access_lines()) >= 1, 10, "the access-log line")
        (record,) = proxy.access_records()
        assert (record["status"], record["target"]) == (200, f"/bytes/{RESPONSE}")
        assert 0 < record["body_bytes_sent"] < RESPONSE
        if fault == "full":
            wait_until(lambda: is_empty(temp), 10, "the temp file closed")


# --- -t, start-up and reload ---


def unwritable_temp_config(base: Path, upstream: Gunicorn) -> tuple[Path, Path, str]:
    """A config whose temp_path the workers cannot write: (config, temp_path, user clause)."""
    temp = base / "spool"
    temp.mkdir(mode=0o700 if IS_ROOT else 0o500)
    top = "user: nobody" if IS_ROOT else ""
    config = base / "proxy.yaml"
    text = config_text(proxy_yaml([f'"{upstream.address}"']), base, free_port(), "json")
    config.write_text(f"{top}\n{text}")
    return config, temp, " as user 'nobody'" if IS_ROOT else ""


def temp_path_line(config: Path) -> int:
    lines = config.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith("temp_path:"))


@pytest.mark.parametrize("command", [["-t"], []], ids=["-t", "start"])
def test_a_temp_path_the_workers_cannot_write_is_a_config_error(
    command: list[str], base_dir: Path, gunicorn_a: Gunicorn
) -> None:
    config, temp, who = unwritable_temp_config(base_dir, gunicorn_a)
    try:
        result = run_cli(*command, "-c", str(config))
    finally:
        os.chmod(temp, 0o755)
    assert result.returncode == 1
    assert (
        f"edgeproxy: {config}:{temp_path_line(config)}: temp_path: cannot create a temp file "
        f"in {temp}{who}: Permission denied (EACCES)\n"
    ) in result.stderr
    assert "configuration ok" not in result.stdout


def test_a_temp_path_the_workers_can_write_passes(base_dir: Path, gunicorn_a: Gunicorn) -> None:
    config, temp, _ = unwritable_temp_config(base_dir, gunicorn_a)
    if IS_ROOT:
        os.chown(temp, pwd.getpwnam("nobody").pw_uid, -1)
    else:
        os.chmod(temp, 0o700)
    result = run_cli("-t", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "configuration ok\n"
    assert list(temp.iterdir()) == []  # the check's temp file left nothing behind


@pytest.mark.skipif(not IS_ROOT, reason="only root's workers switch to `user`")
def test_the_check_creates_its_file_as_the_workers_user(
    base_dir: Path, gunicorn_a: Gunicorn
) -> None:
    # Writable by root but by nobody only through group or other bits: a check run as root
    # (which passes every permission) would wrongly accept it.
    config, temp, _ = unwritable_temp_config(base_dir, gunicorn_a)
    os.chmod(temp, 0o777)
    ok = run_cli("-t", "-c", str(config))
    os.chmod(temp, 0o755)
    refused = run_cli("-t", "-c", str(config))
    assert ok.returncode == 0, ok.stderr
    assert refused.returncode == 1
    assert "as user 'nobody': Permission denied (EACCES)" in refused.stderr


def test_a_reload_is_refused_while_the_temp_path_is_not_writable(
    base_dir: Path, gunicorn_a: Gunicorn
) -> None:
    with proxy_with_fault("not writable", base_dir, gunicorn_a) as (proxy, temp):
        proxy.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in proxy.errors(), 15, "the reload refused")
        who = " as user 'nobody'" if IS_ROOT else ""
        assert (
            f"reload failed, still running the previous configuration: {proxy.config}:"
            f"{temp_path_line(proxy.config)}: temp_path: cannot create a temp file in "
            f"{temp}{who}: Permission denied (EACCES)"
        ) in proxy.errors()
        assert proxy.running()  # still serving

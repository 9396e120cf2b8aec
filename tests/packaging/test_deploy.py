"""docs/deploy.md followed on a fresh install, with systemd's part played by the test: the
guide's install commands (the shared `compiled_install` venv), its proxy.yaml with this
test's addresses, paths and certificate, and the command lines of conf/edgeproxy.service
(ExecStartPre, ExecStart, ExecReload, KillSignal) and conf/edgeproxy.logrotate
(postrotate), each with /opt/edgeproxy and /etc/edgeproxy/proxy.yaml swapped for the test's.
As root (CI), the workers drop to `nobody` as the guide's `user: edgeproxy` would."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gunicorn, free_port, wait_until
from tests.integration.test_master import children
from tests.packaging.setup_script import ROOT
from tests.packaging.venvs import clean_env, install_tests
from tests.tls_certs import TestCA

GUIDE = ROOT / "docs" / "deploy.md"
UNIT = ROOT / "conf" / "edgeproxy.service"
LOGROTATE = ROOT / "conf" / "edgeproxy.logrotate"
INSTALL_DIR = "/opt/edgeproxy"
CONFIG = "/etc/edgeproxy/proxy.yaml"
PID_FILE = "/run/edgeproxy/edgeproxy.pid"
LOG_DIR = "/var/log/edgeproxy/"
CERTIFICATE = "/etc/letsencrypt/live/example.com/fullchain.pem"
KEY = "/etc/letsencrypt/live/example.com/privkey.pem"
WEBROOT = "/var/www/acme"  # certbot's --webroot, served for ACME HTTP-01 challenges
COMMAND_TIMEOUT = 30


def service_section() -> dict[str, str]:
    """conf/edgeproxy.service's [Service] keys (each is set once there)."""
    section, keys = "", {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in keys, f"{key} set twice"
            keys[key] = value
    return keys


def guide_config() -> str:
    (block,) = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return str(block)


def postrotate_script() -> str:
    text = LOGROTATE.read_text()
    (script,) = re.findall(r"postrotate\n(.*?)\n\s*endscript", text, re.DOTALL)
    return str(script).strip()


def substitute(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, f"the guide no longer has {old!r}: update this test"
    return text.replace(old, new)


class Deployment:
    """The guide's files with the test's paths: a config dir, a log dir the workers' user
    can reach, a run dir for the pid file, and the installed virtualenv."""

    def __init__(self, venv: Path, base: Path, upstream: str) -> None:
        self.venv = venv
        self.config = base / "etc" / "proxy.yaml"
        self.config.parent.mkdir()
        self.logs = base / "log"
        self.run_dir = base / "run"
        self.run_dir.mkdir()
        self.http_port, self.https_port = free_port(), free_port()
        # In root's tmp_path, out of the workers' reach: only the master reads the key (the
        # guide's step 3), before it forks.
        self.ca = TestCA(base)
        self.pair = self.ca.issue("example.com", "www.example.com")
        self.upstream = upstream
        self.master: subprocess.Popen[str] | None = None
        self.master_output = base / "master.out"

    def write_config(self, logs: Path, extra_location: str = "") -> None:
        self.logs = logs
        self.webroot = logs / "acme"  # where the workers' user can read it too
        text = guide_config()
        as_root = os.geteuid() == 0
        user = "nobody" if as_root else pwd.getpwuid(os.getuid()).pw_name
        for old, new in (
            ("workers: auto", "workers: 2"),
            ("user: edgeproxy", f"user: {user}"),
            (PID_FILE, str(self.run_dir / "edgeproxy.pid")),
            (LOG_DIR, f"{logs}/"),
            ('"127.0.0.1:8000"', f'"{self.upstream}"'),
            ('"0.0.0.0:80"', f'"127.0.0.1:{self.http_port}"'),
            ('"0.0.0.0:443"', f'"127.0.0.1:{self.https_port}"'),
            (CERTIFICATE, str(self.pair.certificate)),
            (KEY, str(self.pair.key)),
            (f"root: {WEBROOT}}}", f"root: {self.webroot}}}"),
        ):
            text = substitute(text, old, new)
        if extra_location:
            text = substitute(
                text,
                "      - {path: /, proxy_pass: app}",
                f"{extra_location}\n      - {{path: /, proxy_pass: app}}",
            )
        self.config.write_text(text)

    def command(self, line: str) -> list[str]:
        assert line.startswith(f"{INSTALL_DIR}/bin/edgeproxy "), line
        line = line.replace(INSTALL_DIR, str(self.venv)).replace(CONFIG, str(self.config))
        return shlex.split(line)

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(line), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            env=clean_env(), cwd=str(self.config.parent),
        )  # fmt: skip

    def start(self, line: str) -> None:
        with self.master_output.open("w") as out:
            self.master = subprocess.Popen(
                self.command(line), stdout=out, stderr=subprocess.STDOUT, text=True,
                env=clean_env(), cwd=str(self.config.parent),
            )  # fmt: skip

    def output(self) -> str:
        return self.master_output.read_text() + self.error_log()

    def error_log(self) -> str:
        path = self.logs / "error.log"
        return path.read_text() if path.exists() else ""

    def workers(self) -> set[int]:
        assert self.master is not None
        return children(self.master.pid)

    def https_get(self, path: str) -> tuple[int, bytes]:
        context = self.ca.client_context()
        raw = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="example.com") as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: example.com\r\n\r\n".encode())
            return parse_response(read_all(sock))

    def http_get(self, path: str) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: example.com\r\n\r\n".encode())
            return parse_response(read_all(sock))

    def serves(self) -> bool:
        assert self.master is not None and self.master.poll() is None, self.output()
        try:
            return self.https_get("/")[0] == 200
        except (OSError, ssl.SSLError, IndexError):  # not listening yet, or closed at once
            return False

    def kill(self) -> None:
        if self.master is not None and self.master.poll() is None:
            workers = self.workers()
            self.master.kill()
            self.master.wait(10)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of `pid`."""
    with open(f"/proc/{pid}/status") as fh:
        line = next(line for line in fh if line.startswith("Uid:"))
    return {int(uid) for uid in line.split()[1:]}


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def parse_response(data: bytes) -> tuple[int, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory the workers' user can reach (pytest's tmp_path is root's alone), for the
    log files the workers open by name."""
    path = Path(tempfile.mkdtemp())
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def deployment(
    compiled_install: Path, tmp_path: Path, reachable_dir: Path, gunicorn_a: Gunicorn
) -> Iterator[Deployment]:
    deployed = Deployment(compiled_install, tmp_path, gunicorn_a.address)
    deployed.write_config(reachable_dir)
    yield deployed
    deployed.kill()


# The two checks below need no install: they run in every test run.


def test_the_guide_installs_as_the_shared_venv_was_made() -> None:
    """What `compiled_install` (tests/packaging/venvs.py) runs is what step 2 says."""
    guide = GUIDE.read_text()
    assert f"python3 -m venv {INSTALL_DIR}\n" in guide
    assert f"{INSTALL_DIR}/bin/pip install /usr/local/src/edgeproxy\n" in guide


def test_the_unit_runs_the_installed_edgeproxy_on_the_guides_config() -> None:
    unit = service_section()
    assert unit["ExecStartPre"] == f"{INSTALL_DIR}/bin/edgeproxy -t -c {CONFIG}"
    assert unit["ExecStart"] == f"{INSTALL_DIR}/bin/edgeproxy -c {CONFIG}"
    assert unit["ExecReload"] == f"{INSTALL_DIR}/bin/edgeproxy -s reload -c {CONFIG}"
    assert "User" not in unit  # the master binds as root; the workers drop to `user`
    assert unit["RuntimeDirectory"] == "edgeproxy"  # /run/edgeproxy, the guide's pid_file's
    assert f"pid_file: {PID_FILE}" in guide_config()


def test_the_guides_acme_webroot_is_the_one_it_makes_and_gives_certbot() -> None:
    guide = GUIDE.read_text()
    assert f"      - {{path: /.well-known/acme-challenge/, root: {WEBROOT}}}" in guide_config()
    assert re.search(rf"^install -d .* {WEBROOT}$", guide, re.MULTILINE)
    assert f"certbot certonly --webroot -w {WEBROOT} " in guide


@install_tests
def test_the_unit_and_logrotate_commands_drive_the_installed_edgeproxy(
    deployment: Deployment,
) -> None:
    unit = service_section()

    # ExecStartPre, then ExecStart: the master in the foreground.
    check = deployment.run(unit["ExecStartPre"])
    assert (check.returncode, check.stdout.strip()) == (0, "configuration ok"), check.stderr
    deployment.start(unit["ExecStart"])
    wait_until(deployment.serves, 30, "edgeproxy serving HTTPS")
    status, response = deployment.https_get("/")
    assert status == 200 and response.endswith(b"hello from a\n")
    status, response = deployment.http_get("/some/page?x=1")
    assert status == 301
    assert b"\r\nlocation: https://example.com/some/page?x=1\r\n" in response.lower()
    # An ACME HTTP-01 challenge, as certbot's webroot leaves it: served over plain HTTP.
    challenges = deployment.webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "token-1").write_text("token-1.key-authorization")
    status, response = deployment.http_get("/.well-known/acme-challenge/token-1")
    assert status == 200 and response.endswith(b"\r\n\r\ntoken-1.key-authorization")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody").pw_uid
        wait_until(lambda: len(deployment.workers()) == 2, 15, "2 workers")
        assert deployment.master is not None
        assert uids(deployment.master.pid) == {0}
        for worker in deployment.workers():
            assert uids(worker) == {nobody}

    # ExecReload (`systemctl reload`): an invalid file is refused with its error, and the
    # running config stays; a valid one is served.
    good = deployment.config.read_text()
    deployment.config.write_text(good.replace("workers: 2", "workers: two"))
    refused = deployment.run(unit["ExecReload"])
    assert refused.returncode == 1
    assert f"{deployment.config}:1: workers:" in refused.stderr
    assert deployment.https_get("/")[0] == 200
    deployment.write_config(deployment.logs, "      - {exact: /v2, return: {status: 204}}")
    reloaded = deployment.run(unit["ExecReload"])
    assert reloaded.returncode == 0, reloaded.stderr
    wait_until(lambda: deployment.https_get("/v2")[0] == 204, 15, "the reloaded config")

    # logrotate: move the files, run postrotate; new files appear and, once each worker has
    # reopened (after the master's "reopened" line), get the new lines.
    access = deployment.logs / "access.log"
    wait_until(lambda: access.exists() and b"/v2" in access.read_bytes(), 15, "logged /v2")
    access.rename(deployment.logs / "access.log.1")
    (deployment.logs / "error.log").rename(deployment.logs / "error.log.1")
    script = postrotate_script()
    script = script.replace(PID_FILE, str(deployment.run_dir / "edgeproxy.pid"))
    script = script.replace(INSTALL_DIR, str(deployment.venv)).replace(
        CONFIG, str(deployment.config)
    )
    rotated = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=clean_env(),
    )
    assert rotated.returncode == 0, rotated.stderr
    wait_until(lambda: "log files reopened" in deployment.error_log(), 15, "the reopen")

    def logged_in_the_new_file() -> bool:
        assert deployment.https_get("/after-rotation")[0] == 200
        return access.exists() and b"/after-rotation" in access.read_bytes()

    wait_until(logged_in_the_new_file, 15, "a line in the new access log")
    assert b"GET /v2 " in (deployment.logs / "access.log.1").read_bytes()  # moved, not cut
    if os.geteuid() == 0:
        assert access.stat().st_uid == pwd.getpwnam("nobody").pw_uid

    # `systemctl stop`: KillSignal to the master, which retires its workers and exits 0.
    assert deployment.master is not None
    workers = deployment.workers()
    deployment.master.send_signal(signal.Signals[unit["KillSignal"]])
    assert deployment.master.wait(int(unit["TimeoutStopSec"])) == 0, deployment.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)

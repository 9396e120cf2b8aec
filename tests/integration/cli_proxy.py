"""edgeproxy started through its real CLI (`python -m edgeproxy -c FILE`) in a subprocess,
with its config, error log and access log as files in one directory the test reads.

`CliProxy` is the one launcher the CLI tests share: `launch()` starts the config in `dir`,
`stop()` ends the master (and any child it left behind). `start_cli_proxy` builds one from
a proxy_yaml config; tests with their own config shape subclass it (test_master's Edge)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, wait_until


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of `pid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


@dataclass
class CliProxy:
    dir: Path
    port: int
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    stderr: str = field(default="", init=False)  # what the CLI wrote there, once stopped

    @property
    def config(self) -> Path:
        return self.dir / "proxy.yaml"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not launched"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def access_records(self) -> list[dict[str, Any]]:
        """The access log's lines, when its format is json."""
        return [json.loads(line) for line in self.access_lines()]

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def launch(self) -> None:
        """Start `edgeproxy -c config` (written already); the caller waits for what it needs."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeproxy", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )

    def stop(self) -> int | None:
        """SIGTERM the master and wait for it (SIGKILL after 15 s), keeping its stderr in
        `self.stderr`; then SIGKILL any child of it still alive, so that a test which failed
        leaves no worker behind. The master's exit status (None if never launched)."""
        process = self.process
        if process is None:
            return None
        left = children(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=5)
        self.stderr += stderr or ""
        for pid in left:  # orphans now: no longer the master's children
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        return process.returncode


def config_text(yaml_text: str, directory: Path, port: int, access_format: str) -> str:
    """`yaml_text` from proxy_yaml, made to serve on `port` with one worker, both logs in
    `directory` (each access-log line written as its request ends) and temp_path
    `directory/spool`."""
    logs = (
        f"workers: 1\n"
        f"error_log: {{path: {directory / 'error.log'}, level: info}}\n"
        f"access_log: {{path: {directory / 'access.log'}, format: {access_format}, flush: 0}}"
    )
    text = yaml_text.replace("access_log: {format: off}", logs)
    text = text.replace("{temp}", str(directory / "spool"))
    return text.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')


def start_cli_proxy(
    yaml_text: str, directory: Path, access_format: str = "json", top: str = ""
) -> CliProxy:
    """Write the config into `directory`, start edgeproxy on a free port, wait until its
    worker serves. `top` is extra top-level YAML (such as `user: nobody`); the temp_path
    `directory/spool` must exist."""
    proxy = CliProxy(directory, free_port())
    text = config_text(yaml_text, directory, proxy.port, access_format)
    proxy.config.write_text(f"{text}\n{top}\n")
    proxy.launch()

    def serving() -> bool:
        if not proxy.running():
            proxy.stop()
            raise AssertionError(f"edgeproxy exited: {proxy.stderr}{proxy.errors()}")
        return "ready (generation" in proxy.errors()

    try:
        wait_until(serving, 20, "the edgeproxy worker to serve")
    except BaseException:
        proxy.stop()
        raise
    return proxy

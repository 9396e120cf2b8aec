"""edgeproxy started through its real CLI (`python -m edgeproxy -c FILE`) in a subprocess,
from a proxy_yaml config, with its error and access logs in files the test reads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, wait_until


@dataclass
class CliProxy:
    dir: Path
    port: int
    process: subprocess.Popen[str]

    @property
    def config(self) -> Path:
        return self.dir / "proxy.yaml"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def access_records(self) -> list[dict[str, Any]]:
        """The access log's lines, when its format is json."""
        return [json.loads(line) for line in self.access_lines()]

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


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
    port = free_port()
    config = directory / "proxy.yaml"
    config.write_text(config_text(yaml_text, directory, port, access_format) + f"\n{top}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeproxy", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=dict(os.environ),
    )
    proxy = CliProxy(directory, port, process)

    def serving() -> bool:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"edgeproxy exited: {stderr}{proxy.errors()}")
        return "ready (generation" in proxy.errors()

    try:
        wait_until(serving, 20, "the edgeproxy worker to serve")
    except BaseException:
        proxy.stop()
        raise
    return proxy

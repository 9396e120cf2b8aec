"""What machine and tools a run was made with, for the JSON of results."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers import REPO_ROOT, Tools
from slow import slowhttptest_missing


def _command_output(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else None


def _slowhttptest_version() -> str | None:
    if slowhttptest_missing():
        return None
    # It has no --version; its usage text names it.
    text = subprocess.run(
        ["slowhttptest", "-h"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    line = next((x for x in text.splitlines() if "version" in x), "")
    return line.rsplit("version", 1)[-1].strip() or None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(tools: Tools) -> dict[str, Any]:
    uname = platform.uname()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "uname": f"{uname.system} {uname.node} {uname.release} {uname.version} {uname.machine}",
        "python": sys.version.split()[0],
        # The load before the run: a busy shared machine explains an odd figure.
        "loadavg": list(os.getloadavg()),
        "nginx": _command_output([tools.nginx, "-v"]) if tools.nginx else None,
        "wrk": _command_output([tools.wrk, "-v"]) if tools.wrk else None,
        "slowhttptest": _slowhttptest_version(),
        "git_commit": _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
        "edgeproxy": _command_output(
            [sys.executable, "-m", "edgeproxy", "--version"], cwd=tools.edgeproxy_root
        ),
        "packages": {
            name: _package_version(name) for name in ("uvloop", "httptools", "h11", "gunicorn")
        },
    }
